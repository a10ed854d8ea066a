"""The ``file`` source: candles a user already has, imported from CSV or Parquet into the cache.

``read_table`` accepts the usual column names (case-insensitive aliases such as ``time``/``timestamp``/``date``,
``o``/``h``/``l``/``c``, ``vol``) and times as epoch seconds, milliseconds, microseconds or nanoseconds (told apart
by magnitude) or ISO 8601 strings (naive means UTC). Every problem is a ``DataError`` that names the file and the
column or row: row numbers are line numbers for CSV (the header is row 1) and 1-based row indices for Parquet.

``import_file`` checks the bars sit on the granularity's grid and merges them into monthly cache partitions under
the source name ``file``; ``FileSource`` then serves them (it cannot fetch anything new).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from backfarm._util.time import NS_PER_SECOND, from_ns, to_ns
from backfarm.candles.cache import CandleCache
from backfarm.candles.checks import first_bad_bar
from backfarm.config import Settings
from backfarm.core.candles import COLUMNS, GRANULARITIES, check_symbol, granularity_seconds
from backfarm.errors import DataError

SOURCE_NAME = "file"

ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("ts", "time", "timestamp", "date", "datetime", "open_time", "unix"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c", "price"),
    "volume": ("volume", "vol", "v", "base_volume"),
}
"""Accepted column names per schema column, in order of preference (matched case-insensitively)."""

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_EPOCH_BANDS = (1e11, 1e14, 1e17)  # below: seconds, milliseconds, microseconds; above: nanoseconds
_EPOCH_UNITS = (("seconds", 10**9), ("milliseconds", 10**6), ("microseconds", 10**3), ("nanoseconds", 1))
_MAX_EPOCH_S = 9.2e9  # int64 nanoseconds end in 2262


def import_hint(symbol: str, granularity: str) -> str:
    """The command that imports candles for ``symbol``/``granularity``."""
    return f"backfarm data import PATH --symbol {symbol} --granularity {granularity}"


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote: rows, the months touched, the first/last bar and the bars missing in between."""

    rows: int
    months: list[str]
    first: datetime
    last: datetime
    gaps: int


# --- reading ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """Formats 'file row N' for a row index (0-based in the data)."""

    label: str
    base: int  # row number of the first data row

    def row(self, i: int) -> str:
        return f"{self.label} row {int(i) + self.base}"


def read_table(path: Path) -> dict[str, np.ndarray]:
    """Candles from a CSV or Parquet file: ``ts`` (int64 ns UTC) and float64 OHLCV, sorted and de-duplicated."""
    arrays, _ = _read(Path(path))
    return arrays


def _read(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The candles plus, per output bar, the row number it came from (for error messages)."""
    table, where = _load(path)
    picked = _pick_columns(table, where.label)
    if table.num_rows == 0:
        raise DataError(f"{where.label}: the file has no rows")
    values = {c: _parse_float(picked[c][1], picked[c][0], where) for c in COLUMNS[1:]}
    _check_rows(values, where)
    ts = _parse_time(picked["ts"][1], picked["ts"][0], where)
    return _sort_dedupe(ts, values, where)


def _load(path: Path) -> tuple[pa.Table, _Where]:
    name = path.name.lower()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if name.endswith(_CSV_SUFFIXES):
            return pacsv.read_csv(path), _Where(path.name, 2)
        if name.endswith(_PARQUET_SUFFIXES):
            return pq.read_table(path), _Where(path.name, 1)
    except (pa.ArrowException, OSError) as exc:
        kind = "CSV" if name.endswith(_CSV_SUFFIXES) else "Parquet"
        raise DataError(f"{path.name}: cannot read as {kind}: {_first_line(exc)}") from None
    suffix = "".join(path.suffixes) or "(none)"
    raise DataError(f"{path.name}: unsupported file type '{suffix}' (use .csv or .parquet)")


def _pick_columns(table: pa.Table, label: str) -> dict[str, tuple[str, pa.Array]]:
    """Map schema columns to the file's columns by alias; a missing one is an error listing what was found."""
    by_lower: dict[str, str] = {}
    for name in table.column_names:
        by_lower.setdefault(str(name).strip().lower(), name)
    picked = {}
    for col, aliases in ALIASES.items():
        found = next((by_lower[a] for a in aliases if a in by_lower), None)
        if found is None:
            shown = ", ".join(table.column_names[:12]) + (", ..." if table.num_columns > 12 else "")
            hint = "; the first line must be a header naming the columns" if _numeric_header(table) else ""
            raise DataError(f"{label}: missing column '{col}' (found: {shown}){hint}")
        picked[col] = (found, table.column(found).combine_chunks())
    return picked


def _numeric_header(table: pa.Table) -> bool:
    try:
        [float(str(n)) for n in table.column_names]
    except ValueError:
        return False
    return True


def _parse_float(arr: pa.Array, column: str, where: _Where) -> np.ndarray:
    """A numeric column as float64; errors name the first empty, non-numeric or non-finite value."""
    _check_nulls(arr, column, where)
    kind = arr.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = _strings_to_float(arr, column, where)
    else:
        raise DataError(f"{where.label}: column '{column}' holds {kind}, expected numbers")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(f"{where.row(bad[0])} column '{column}': {values[bad[0]]} is not a finite number")
    return np.ascontiguousarray(values, dtype=np.float64)


def _strings_to_float(arr: pa.Array, column: str, where: _Where) -> np.ndarray:
    try:
        return pc.cast(pc.utf8_trim_whitespace(arr), pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        pass
    # Slow path, only to find and name the offending row.
    out = np.empty(len(arr))
    for i, text in enumerate(arr.to_pylist()):
        try:
            out[i] = float(text)
        except ValueError:
            raise DataError(f"{where.row(i)} column '{column}': non-numeric value {text!r}") from None
    return out


def _check_nulls(arr: pa.Array, column: str, where: _Where) -> None:
    if arr.null_count:
        first = int(np.argmax(arr.is_null().to_numpy(zero_copy_only=False)))
        raise DataError(f"{where.row(first)} column '{column}': empty value")


def _check_rows(values: dict[str, np.ndarray], where: _Where) -> None:
    """The bar rules every source obeys (:mod:`backfarm.candles.checks`), reporting the first bad row in file order."""
    found = first_bad_bar(values)
    if found is not None:
        raise DataError(f"{where.row(found[0])}: {found[1]}")


# --- time -------------------------------------------------------------------------------------------------------


def _parse_time(arr: pa.Array, column: str, where: _Where) -> np.ndarray:
    """Bar open times as int64 ns UTC from timestamps, dates, epoch numbers or ISO 8601 strings."""
    _check_nulls(arr, column, where)
    kind = arr.type
    if pa.types.is_timestamp(kind):
        return _ns(pc.cast(arr, pa.timestamp("ns", tz=kind.tz)))  # naive Arrow timestamps are UTC wall time
    if pa.types.is_date(kind):
        return _ns(pc.cast(pc.cast(arr, pa.date32()), pa.timestamp("ns")))
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return _epoch_to_ns(arr.to_numpy(zero_copy_only=False), column, where)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _strings_to_ns(pc.utf8_trim_whitespace(arr), column, where)
    raise DataError(f"{where.label}: column '{column}' holds {kind}, expected times")


def _ns(arr: pa.Array) -> np.ndarray:
    return np.ascontiguousarray(arr.view(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _strings_to_ns(arr: pa.Array, column: str, where: _Where) -> np.ndarray:
    for target in (pa.int64(), pa.float64()):
        try:
            return _epoch_to_ns(pc.cast(arr, target).to_numpy(zero_copy_only=False), column, where)
        except pa.ArrowInvalid:
            pass
    for target in (pa.timestamp("ns", tz="UTC"), pa.timestamp("ns")):  # zoned strings, then naive (= UTC) ones
        try:
            return _ns(pc.cast(arr, target))
        except pa.ArrowInvalid:
            pass
    return _mixed_strings_to_ns(arr.to_pylist(), column, where)


def _mixed_strings_to_ns(texts: list[str], column: str, where: _Where) -> np.ndarray:
    """Unusual or mixed formats, row by row with Python's ISO parser; names the first unreadable value."""
    out = np.empty(len(texts), np.int64)
    numeric = np.zeros(len(texts), bool)
    for i, text in enumerate(texts):
        try:
            out[i] = to_ns(datetime.fromisoformat(text))
        except ValueError:
            numeric[i] = _is_number(text)
            if not numeric[i]:
                raise DataError(
                    f"{where.row(i)} column '{column}': cannot read time {text!r} (use ISO 8601 or epoch seconds/ms)"
                ) from None
    if numeric.all():
        return _epoch_to_ns(np.array([float(t) for t in texts]), column, where)
    odd = np.flatnonzero(numeric != numeric[0])
    if odd.size:  # every value readable, but some are epoch numbers and others dates
        raise DataError(f"{where.row(odd[0])} column '{column}': {texts[odd[0]]!r} mixes dates and epoch numbers")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _epoch_to_ns(values: np.ndarray, column: str, where: _Where) -> np.ndarray:
    """Epoch numbers to ns, the unit told by magnitude; every row must be in the same unit."""
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(f"{where.row(bad[0])} column '{column}': {values[bad[0]]} is not a finite number")
    band = np.searchsorted(_EPOCH_BANDS, np.abs(values), side="right")
    odd = np.flatnonzero(band != band[0])
    unit, mult = _EPOCH_UNITS[int(band[0])]
    if odd.size:
        i = odd[0]
        raise DataError(
            f"{where.row(i)} column '{column}': epoch time {values[i]} is not in {unit} like the first row's"
        )
    if band[0] == 0 and np.abs(values).max() > _MAX_EPOCH_S:
        i = int(np.argmax(np.abs(values)))
        raise DataError(f"{where.row(i)} column '{column}': epoch time {values[i]} is out of range")
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64) * mult
    return np.rint(values.astype(np.float64) * mult).astype(np.int64)


def _sort_dedupe(
    ts: np.ndarray, values: dict[str, np.ndarray], where: _Where
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Sort by time; drop exact duplicates, refuse duplicates that disagree. Returns arrays and source row numbers."""
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    values = {k: v[order] for k, v in values.items()}
    dup = np.flatnonzero(ts[1:] == ts[:-1])
    keep = np.ones(ts.shape[0], bool)
    if dup.size:
        differs = np.logical_or.reduce([values[k][dup] != values[k][dup + 1] for k in values])
        if differs.any():
            j = dup[int(np.argmax(differs))]
            a, b = sorted((int(order[j]), int(order[j + 1])))
            raise DataError(
                f"{where.label} rows {a + where.base} and {b + where.base}: "
                f"duplicate time {_iso(int(ts[j]))} with different values"
            )
        keep[dup + 1] = False
    arrays = {"ts": ts[keep], **{k: v[keep] for k, v in values.items()}}
    return arrays, order[keep] + where.base


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _iso(ns: int) -> str:
    return from_ns(ns).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- import -----------------------------------------------------------------------------------------------------


def import_file(settings: Settings, path: Path, symbol: str, granularity: str) -> ImportReport:
    """Validate a file and merge its bars into the cache under source ``file`` (file rows win over cached ones)."""
    check_symbol(symbol, SOURCE_NAME)
    step = granularity_seconds(granularity) * NS_PER_SECOND
    path = Path(path)
    arrays, rows = _read(path)
    ts = arrays["ts"]
    off_grid = np.flatnonzero(ts % step)
    if off_grid.size:
        k = off_grid[int(np.argmin(rows[off_grid]))]  # the first offending row in file order
        raise DataError(
            f"{path.name} row {rows[k]}: time {_iso(int(ts[k]))} is not on the {granularity} grid "
            f"(bars must open at multiples of {step // NS_PER_SECOND} s since 1970-01-01 UTC)"
        )
    _check_spacing(ts, step, granularity, path.name)
    cache = CandleCache(settings.candles_dir)
    month_of = ts.astype("datetime64[ns]").astype("datetime64[M]")
    starts = np.flatnonzero(np.r_[True, month_of[1:] != month_of[:-1]])
    ends = np.r_[starts[1:], ts.shape[0]]
    months = [str(month_of[i]) for i in starts]
    for month, i, j in zip(months, starts, ends, strict=True):
        part = {k: v[i:j] for k, v in arrays.items()}
        with cache.lock(SOURCE_NAME, symbol, granularity, month):
            old = cache.read(SOURCE_NAME, symbol, granularity, month)
            merged = part if old is None else _merge(part, old.arrays)
            cache.write(SOURCE_NAME, symbol, granularity, month, merged, complete=True)
    gaps = int((ts[-1] - ts[0]) // step + 1 - ts.shape[0])
    return ImportReport(ts.shape[0], months, from_ns(int(ts[0])), from_ns(int(ts[-1])), gaps)


def _check_spacing(ts: np.ndarray, step: int, granularity: str, label: str) -> None:
    """Refuse a file whose bars are mostly farther apart than ``granularity`` (an hourly file imported as 5m would
    otherwise be stored as 5-minute bars with eleven of every twelve missing): say what the file holds."""
    if ts.shape[0] < 3:
        return
    gaps, counts = np.unique(np.diff(ts), return_counts=True)
    spacing = int(gaps[int(np.argmax(counts))])
    if spacing <= step:
        return
    seconds = spacing // NS_PER_SECOND
    named = {s: name for name, s in GRANULARITIES.items()}.get(seconds)
    holds = f"{named} bars" if named else f"bars {seconds:,} s apart"
    hint = f": import it with --granularity {named}" if named else ""
    raise DataError(f"{label}: the file holds {holds} (most are {seconds:,} s apart), not {granularity}{hint}")


def _merge(new: dict[str, np.ndarray], old: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Union of two sorted bar sets; where both have a bar, the new one wins."""
    both = {k: np.concatenate([new[k], old[k]]) for k in COLUMNS}
    _, first = np.unique(both["ts"], return_index=True)  # first occurrence = the new bar
    return {k: v[first] for k, v in both.items()}
