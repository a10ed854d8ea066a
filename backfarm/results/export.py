"""Exporting a sweep's results as flat rows (:func:`backfarm.results.rows.flat_row`) to Parquet or CSV, streaming.

The columns are known before the first row: the fixed ones, then one per parameter of the sweep's strategies (from
its spec and the registry; a parameter a strategy here does not declare still travels in the ``params`` JSON
column), so rows are written a page at a time and memory stays bounded whatever the sweep's size. The file is
written under a temporary name and renamed when complete: an export that fails leaves no half file.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from backfarm.core.results import Filters, ResultRecord
from backfarm.errors import ConfigError, ValidationError
from backfarm.results.rows import FLAT, flat_row, param_column
from backfarm.results.store import ResultReader
from backfarm.strategies.registry import all_strategies

PAGE = 5000
"""Rows held in memory before they are written."""
_ARROW = {"text": pa.string(), "int": pa.int64(), "float": pa.float64()}


def param_kinds(strategies: Iterable[str]) -> dict[str, str]:
    """Column → kind (``int`` or ``float``) of every parameter of ``strategies`` known here (a name two strategies
    declare with different kinds is ``float``)."""
    known = all_strategies()
    kinds: dict[str, str] = {}
    for name in strategies:
        strategy = known.get(name)
        for param in strategy.params if strategy is not None else ():
            kind = "int" if param.kind is int else "float"
            column = param_column(param.name)
            kinds[column] = kind if kinds.get(column, kind) == kind else "float"
    return kinds


def export_sweep(store: ResultReader, sweep_id: str, out: Path) -> int:
    """Write every result of ``sweep_id`` to ``out`` (``.parquet`` or ``.csv``); the number of rows written."""
    info = store.sweep(sweep_id)
    if info is None:
        raise ValidationError(f"unknown sweep '{sweep_id}' (see `backfarm sweeps`)")
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write {out}: {out.parent} is not a directory")
    strategies = info.spec.get("strategies") or sorted(all_strategies())
    columns = {**FLAT, **param_kinds(strategies), "params": "text"}
    records = store.iter_results(Filters(sweep=info.sweep_id))
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if out.suffix.lower() == ".csv":
            written = _csv(records, columns, tmp)
        else:
            written = _parquet(records, columns, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or str(exc).splitlines()[0]}") from None
    finally:
        with contextlib.suppress(OSError):  # nothing to clean up where nothing could be written
            tmp.unlink(missing_ok=True)
    return written


def _pages(records: Iterable[ResultRecord], columns: dict[str, str]) -> Iterator[list[dict[str, Any]]]:
    """Flat rows of ``records`` with exactly ``columns`` (missing values empty), a page at a time."""
    page: list[dict[str, Any]] = []
    for record in records:
        row = flat_row(record)
        page.append({name: _cell(row.get(name), columns[name]) for name in columns})
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page


def _cell(value: Any, kind: str) -> Any:
    """``value`` in its column's kind (a float parameter given as an int, an int column holding a whole float)."""
    if value is None or kind == "text":
        return value
    if kind == "float":
        return float(value)
    return int(value) if float(value).is_integer() else value


def _parquet(records: Iterable[ResultRecord], columns: dict[str, str], path: Path) -> int:
    schema = pa.schema([(name, _ARROW[kind]) for name, kind in columns.items()])
    written = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for page in _pages(records, columns):
            writer.write_table(pa.Table.from_pylist(page, schema=schema))
            written += len(page)
    return written


def _csv(records: Iterable[ResultRecord], columns: dict[str, str], path: Path) -> int:
    written = 0
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for page in _pages(records, columns):
            writer.writerows(page)
            written += len(page)
    return written
