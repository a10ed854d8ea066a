"""The on-disk candle cache: one Parquet file per (source, symbol, granularity, UTC month).

Layout: ``{root}/{source}/{symbol}/{granularity}/{YYYY-MM}.parquet`` with ``root = settings.candles_dir``. Every file
uses the pinned ``ARROW_SCHEMA`` and carries its own metadata (rows, first/last bar, a content checksum, when it was
fetched and whether the month is complete) in the Parquet key-value metadata, so listing the cache reads footers only.

Writes go to a temporary file in the same directory and are renamed into place, under an ``fcntl`` lock file per
partition, so readers never see half a file and two processes on one machine never write one partition at once.
A file that fails to read or verify is moved aside to ``*.corrupt-<timestamp>`` (kept for inspection), a warning
names it, and ``read`` returns ``None`` so the caller fetches the month again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import tempfile
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backfarm._util.disk import writing
from backfarm._util.time import NS_PER_SECOND, from_ns, to_ns, utc_now
from backfarm.core.candles import COLUMNS, GRANULARITIES
from backfarm.errors import CorruptCacheError, ValidationError

ARROW_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
    ]
)
"""The pinned Parquet schema of every cache partition."""

T = TypeVar("T")

logger = logging.getLogger(__name__)

META_KEY = b"backfarm"
"""Key of the partition metadata (JSON) in the Parquet key-value metadata."""
META_VERSION = 1
_WRITE_OPTIONS: dict[str, object] = {
    # Delta-encoded timestamps and byte-split floats make zstd effective on candles: ~35% smaller than plain
    # encoding and faster to read. Page checksums let the reader detect damaged pages.
    "compression": "zstd",
    "use_dictionary": False,
    "column_encoding": {"ts": "DELTA_BINARY_PACKED", **dict.fromkeys(COLUMNS[1:], "BYTE_STREAM_SPLIT")},
    "write_page_checksum": True,
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FLOATS = COLUMNS[1:]


class CorruptCacheWarning(UserWarning):
    """A cache file was unreadable or failed verification and was moved aside."""


# --- time and month helpers -------------------------------------------------------------------------------------


def month_key(ns: int) -> str:
    """``YYYY-MM`` of the UTC month containing an epoch-nanosecond timestamp."""
    return str(np.datetime64(int(ns), "ns").astype("datetime64[M]"))


def month_bounds(month: str) -> tuple[int, int]:
    """``[start, end)`` of a ``YYYY-MM`` month in epoch nanoseconds."""
    m = np.datetime64(month, "M")
    return int(m.astype("datetime64[ns]").astype(np.int64)), int((m + 1).astype("datetime64[ns]").astype(np.int64))


def months_covering(start_ns: int, end_ns: int) -> list[str]:
    """The ``YYYY-MM`` months that intersect ``[start_ns, end_ns)``, in order (empty when the range is empty)."""
    if start_ns >= end_ns:
        return []
    first = np.datetime64(month_key(start_ns), "M")
    last = np.datetime64(month_key(end_ns - 1), "M")
    return [str(m) for m in np.arange(first, last + 1)]


# --- records ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionMeta:
    """What a partition file says about itself (read from the Parquet footer)."""

    rows: int
    first_ts: datetime | None
    last_ts: datetime | None
    checksum: str
    fetched_at: datetime
    complete: bool
    """True when the month was over (all bars closed) at fetch time: the file never needs refetching."""

    def to_json(self) -> bytes:
        """The metadata as stored in the Parquet footer."""
        return json.dumps(
            {
                "version": META_VERSION,
                "rows": self.rows,
                "first_ts": None if self.first_ts is None else to_ns(self.first_ts),
                "last_ts": None if self.last_ts is None else to_ns(self.last_ts),
                "checksum": self.checksum,
                "fetched_at": self.fetched_at.isoformat(),
                "complete": self.complete,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> PartitionMeta:
        """Parse footer metadata; raises ``CorruptCacheError`` on anything unexpected."""
        try:
            d = json.loads(raw)
            fetched_at = datetime.fromisoformat(d["fetched_at"])
            return cls(
                rows=int(d["rows"]),
                first_ts=None if d["first_ts"] is None else from_ns(int(d["first_ts"])),
                last_ts=None if d["last_ts"] is None else from_ns(int(d["last_ts"])),
                checksum=str(d["checksum"]),
                fetched_at=fetched_at if fetched_at.tzinfo else fetched_at.replace(tzinfo=UTC),
                complete=bool(d["complete"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptCacheError(f"bad partition metadata: {exc}") from None


@dataclass(frozen=True)
class Partition:
    """One month of cached candles: ``arrays`` (``ts`` int64 ns + float64 OHLCV, read-only) and its metadata."""

    arrays: dict[str, np.ndarray]
    meta: PartitionMeta


@dataclass(frozen=True)
class CacheEntry:
    """Summary of one (source, symbol, granularity) in the cache, for ``backfarm data ls``."""

    source: str
    symbol: str
    granularity: str
    months: list[str]
    first_ts: datetime | None
    last_ts: datetime | None
    rows: int
    gaps: int
    """Bars missing on the regular grid between the first and the last cached bar."""
    complete: list[bool]
    """Per month, in the order of ``months``."""
    unreadable: list[str] = field(default_factory=list)
    """Months whose file footer could not be read (they are moved aside and refetched on the next load)."""


def checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """CRC-32 over the raw bytes of all columns in schema order (fast enough to verify on every read)."""
    crc = 0
    for name in COLUMNS:
        crc = zlib.crc32(np.ascontiguousarray(arrays[name]).data, crc)
    return f"crc32:{crc:08x}"


def empty_arrays() -> dict[str, np.ndarray]:
    """Zero-length candle arrays with the schema's dtypes."""
    return {name: np.empty(0, np.int64 if name == "ts" else np.float64) for name in COLUMNS}


# --- the cache --------------------------------------------------------------------------------------------------

_held = threading.local()


class CandleCache:
    """Monthly Parquet partitions under ``root``; safe for concurrent readers and writers on one machine."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, source: str, symbol: str, granularity: str, month: str) -> Path:
        """The partition file of one month (which need not exist)."""
        for part in (source, symbol, granularity):
            if not _PART_RE.match(part):
                raise ValidationError(f"invalid cache path component {part!r}")
        if not _MONTH_RE.match(month):
            raise ValidationError(f"invalid month {month!r} (expected YYYY-MM)")
        return self.root / source / symbol / granularity / f"{month}.parquet"

    @contextmanager
    def lock(self, source: str, symbol: str, granularity: str, month: str) -> Iterator[None]:
        """Hold the partition's exclusive file lock (re-entrant within a thread)."""
        path = self.path(source, symbol, granularity, month)
        lock_path = path.with_name(f".{month}.lock")
        held: set[str] = _held.__dict__.setdefault("paths", set())
        if str(lock_path) in held:
            yield
            return
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        # The lock file is never deleted: unlinking it would let two processes lock different inodes.
        with open(lock_path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            held.add(str(lock_path))
            try:
                yield
            finally:
                held.discard(str(lock_path))
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def read(self, source: str, symbol: str, granularity: str, month: str) -> Partition | None:
        """The verified partition, or ``None`` when it is missing or was corrupt (then moved aside)."""
        path = self.path(source, symbol, granularity, month)
        return self._guarded(path, (source, symbol, granularity, month), lambda p: _of_month(_load_partition(p), month))

    def meta(self, source: str, symbol: str, granularity: str, month: str) -> PartitionMeta | None:
        """The partition's footer metadata only (fast), or ``None`` when missing or unreadable (then moved aside)."""
        path = self.path(source, symbol, granularity, month)
        return self._guarded(path, (source, symbol, granularity, month), lambda p: _of_month(_load_meta(p), month))

    def write(
        self,
        source: str,
        symbol: str,
        granularity: str,
        month: str,
        arrays: Mapping[str, np.ndarray],
        complete: bool,
        fetched_at: datetime | None = None,
    ) -> PartitionMeta:
        """Atomically replace one month's partition with ``arrays`` (which must lie inside the month)."""
        path = self.path(source, symbol, granularity, month)
        cols = _check_arrays(arrays, month)
        meta = _meta_for(cols, complete, fetched_at or utc_now())
        table = _to_table(cols, meta)
        with self.lock(source, symbol, granularity, month):
            path.parent.mkdir(parents=True, exist_ok=True)
            # Holding the lock, any temp file of this month is left over from a killed writer.
            for stale in path.parent.glob(f".{month}.*.tmp"):
                with suppress(FileNotFoundError):
                    stale.unlink()
            fd, tmp = tempfile.mkstemp(prefix=f".{month}.", suffix=".tmp", dir=path.parent)
            try:
                with writing(path.parent):
                    with os.fdopen(fd, "wb") as fh:
                        pq.write_table(table, fh, **_WRITE_OPTIONS)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, path)
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return meta

    def months(self, source: str, symbol: str, granularity: str) -> list[str]:
        """Months that have a partition file, sorted."""
        folder = self.path(source, symbol, granularity, "2000-01").parent
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.parquet") if _MONTH_RE.match(p.stem))

    def entry(self, source: str, symbol: str, granularity: str) -> CacheEntry | None:
        """Summary of one (source, symbol, granularity) from file footers, or ``None`` if nothing is cached."""
        months, metas, unreadable = [], [], []
        for month in self.months(source, symbol, granularity):
            try:
                metas.append(_load_meta(self.path(source, symbol, granularity, month)))
                months.append(month)
            except FileNotFoundError:
                continue
            except CorruptCacheError:
                unreadable.append(month)
        if not months and not unreadable:
            return None
        return _summarize(source, symbol, granularity, months, metas, unreadable)

    def holds(self, source: str, symbol: str) -> bool:
        """Whether any month of ``symbol`` from ``source`` is cached (at any granularity)."""
        folder = self.root / source / symbol
        return (
            _PART_RE.match(source) is not None
            and _PART_RE.match(symbol) is not None
            and any(folder.glob("*/*.parquet"))
        )

    def entries(self) -> list[CacheEntry]:
        """One summary per cached (source, symbol, granularity), sorted; reads footers only."""
        out = []
        for gran_dir in sorted(self.root.glob("*/*/*")):
            if not gran_dir.is_dir():
                continue
            source, symbol, granularity = gran_dir.relative_to(self.root).parts
            if all(_PART_RE.match(p) for p in (source, symbol, granularity)):
                entry = self.entry(source, symbol, granularity)
                if entry is not None:
                    out.append(entry)
        return out

    def _guarded(self, path: Path, key: tuple[str, str, str, str], loader: Callable[[Path], T]) -> T | None:
        """Run ``loader``; on corruption move the file aside (unless a writer just replaced it) and return None."""
        for _ in range(2):
            try:
                before = path.stat()
                return loader(path)
            except FileNotFoundError:
                return None
            except CorruptCacheError as exc:
                with self.lock(*key):
                    if _same_file(path, before):
                        _quarantine(path, str(exc))
                        return None
                # A writer replaced the file between our stat and the failure: read the new one.
        return None


def _same_file(path: Path, before: os.stat_result) -> bool:
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    return (now.st_ino, now.st_size, now.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def _quarantine(path: Path, reason: str) -> Path:
    """Rename a bad file to ``*.corrupt-<UTC timestamp>`` (never delete evidence) and warn."""
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    dest = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    os.replace(path, dest)
    message = f"corrupt candle cache file {path} ({reason}); moved to {dest.name}, it will be refetched"
    logger.warning(message)
    warnings.warn(message, CorruptCacheWarning, stacklevel=4)
    return dest


# --- file format ------------------------------------------------------------------------------------------------


def _check_arrays(arrays: Mapping[str, np.ndarray], month: str) -> dict[str, np.ndarray]:
    """Coerce to the schema dtypes and enforce the partition invariants (a bug, not user error, if broken)."""
    missing = [c for c in COLUMNS if c not in arrays]
    if missing:
        raise ValueError(f"candle arrays lack columns {missing}")
    cols = {c: np.ascontiguousarray(arrays[c], dtype=np.int64 if c == "ts" else np.float64) for c in COLUMNS}
    n = cols["ts"].shape[0]
    if any(a.ndim != 1 or a.shape[0] != n for a in cols.values()):
        raise ValueError("candle arrays must be one-dimensional and of equal length")
    ts = cols["ts"]
    if n and np.any(np.diff(ts) <= 0):
        raise ValueError("candle timestamps must be strictly increasing")
    lo, hi = month_bounds(month)
    if n and (ts[0] < lo or ts[-1] >= hi):
        raise ValueError(f"candle timestamps fall outside the month {month}")
    return cols


def _meta_for(cols: dict[str, np.ndarray], complete: bool, fetched_at: datetime) -> PartitionMeta:
    ts = cols["ts"]
    return PartitionMeta(
        rows=int(ts.shape[0]),
        first_ts=from_ns(int(ts[0])) if ts.shape[0] else None,
        last_ts=from_ns(int(ts[-1])) if ts.shape[0] else None,
        checksum=checksum(cols),
        fetched_at=fetched_at.astimezone(UTC) if fetched_at.tzinfo else fetched_at.replace(tzinfo=UTC),
        complete=complete,
    )


def _to_table(cols: dict[str, np.ndarray], meta: PartitionMeta) -> pa.Table:
    ts = pa.array(cols["ts"], type=pa.int64()).view(ARROW_SCHEMA.field("ts").type)
    arrays = [ts] + [pa.array(cols[c], type=pa.float64()) for c in _FLOATS]
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA.with_metadata({META_KEY: meta.to_json()}))


def _corrupt(exc: BaseException) -> CorruptCacheError:
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return CorruptCacheError(f"unreadable: {type(exc).__name__}: {first_line}")


def _is_io_corruption(exc: BaseException) -> bool:
    """Arrow reports damaged files as ArrowInvalid / OSError; a missing file or a permission problem is not damage."""
    return not isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError)


def _load_meta(path: Path) -> PartitionMeta:
    """Footer metadata of a partition file (raises ``CorruptCacheError`` when unreadable)."""
    try:
        kv = pq.read_metadata(path).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        if not _is_io_corruption(exc):
            raise
        raise _corrupt(exc) from None
    if META_KEY not in kv:
        raise CorruptCacheError("no backfarm metadata in the file")
    return PartitionMeta.from_json(kv[META_KEY])


P = TypeVar("P", "Partition", "PartitionMeta")


def _of_month(loaded: P, month: str) -> P:
    """``loaded`` if its bars lie in ``month`` (the file's name); a file copied under another month's name is as
    wrong as a corrupt one, and is quarantined the same way."""
    meta = loaded.meta if isinstance(loaded, Partition) else loaded
    if meta.first_ts is None or meta.last_ts is None:
        return loaded
    lo, hi = month_bounds(month)
    if not lo <= to_ns(meta.first_ts) <= to_ns(meta.last_ts) < hi:
        raise CorruptCacheError(f"its bars ({meta.first_ts:%Y-%m-%d} → {meta.last_ts:%Y-%m-%d}) are not in {month}")
    return loaded


def _load_partition(path: Path) -> Partition:
    """Read and verify a partition file (schema, metadata, row count, checksum)."""
    try:
        table = pq.ParquetFile(path, page_checksum_verification=True).read()
    except (pa.ArrowException, OSError) as exc:
        if not _is_io_corruption(exc):
            raise
        raise _corrupt(exc) from None
    if table.schema.names != list(COLUMNS) or table.schema.types != ARROW_SCHEMA.types:
        raise CorruptCacheError(f"unexpected schema {table.schema.names} {[str(t) for t in table.schema.types]}")
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise CorruptCacheError("no backfarm metadata in the file")
    meta = PartitionMeta.from_json(raw)
    arrays = _table_arrays(table)
    if meta.rows != arrays["ts"].shape[0]:
        raise CorruptCacheError(f"metadata says {meta.rows} rows, file has {arrays['ts'].shape[0]}")
    if checksum(arrays) != meta.checksum:
        raise CorruptCacheError("checksum mismatch")
    return Partition(arrays, meta)


def _table_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    """Columns as read-only numpy arrays (zero-copy where Arrow allows it)."""
    out = {}
    for name in COLUMNS:
        col = table.column(name).combine_chunks()
        if name == "ts":
            col = col.view(pa.int64())
        arr = col.to_numpy(zero_copy_only=False)
        arr.flags.writeable = False
        out[name] = arr
    return out


def _summarize(
    source: str, symbol: str, granularity: str, months: list[str], metas: list[PartitionMeta], unreadable: list[str]
) -> CacheEntry:
    firsts = [m.first_ts for m in metas if m.first_ts is not None]
    lasts = [m.last_ts for m in metas if m.last_ts is not None]
    rows = sum(m.rows for m in metas)
    first, last = (min(firsts), max(lasts)) if firsts else (None, None)
    gaps = 0
    if first is not None and last is not None and granularity in GRANULARITIES:
        step = GRANULARITIES[granularity] * NS_PER_SECOND
        gaps = max(0, (to_ns(last) - to_ns(first)) // step + 1 - rows)
    return CacheEntry(
        source, symbol, granularity, months, first, last, rows, gaps, [m.complete for m in metas], unreadable
    )
