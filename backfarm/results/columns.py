"""Results as Arrow tables: a batch of results as one table (and back), the unit in which they travel and are written.

The columns are those of :mod:`backfarm.results.rows`: identity fields as dictionary-encoded strings (a batch shares
its strategy, symbol, window, costs, source), every metric a typed column (``trades`` and ``wins`` int64, the rest
float64; null = undefined), the pictures as structs with their bytes raw, so Parquet's compression sees the numbers.
:func:`records` gives back exactly the records :func:`table` was given.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from backfarm.core.results import METRICS, MOMENTS, ResultRecord
from backfarm.results import rows as row_format
from backfarm.results.rows import ARTIFACTS, INT_METRICS, metric_column, moment_column

_TEXT = pa.dictionary(pa.int32(), pa.string())
_TYPES: dict[str, pa.DataType] = {
    "job_id": pa.string(),
    "result_hash": pa.string(),
    "params": pa.string(),
    "capital": pa.float64(),
    "bars": pa.int64(),
    "gaps": pa.int64(),
    "created_at": pa.float64(),
    **{metric_column(m): pa.int64() if m in INT_METRICS else pa.float64() for m in METRICS},
    **{moment_column(m): pa.float64() for m in MOMENTS},
    **{name: pa.struct([(f, pa.int64()) for f in fields] + [("data", pa.binary())]) for name, fields in ARTIFACTS},
    "extra": pa.string(),
}
"""Column types; every other column is dictionary-encoded text."""
SCHEMA = pa.schema(
    [
        pa.field(name, _TYPES.get(name, _TEXT), nullable=name not in ("job_id", "result_hash"))
        for name in (*row_format.FACTS, *row_format.PICTURES)
    ]
)
"""One row per result (the columns of :mod:`backfarm.results.rows`, pictures last)."""


class Builder:
    """The rows of a results table, one result at a time: the path results take from the engine to storage without
    becoming :class:`ResultRecord` objects. Rows are tuples in :data:`SCHEMA` order
    (:func:`~backfarm.results.rows.stored_row`), turned into columns once, by :meth:`table`."""

    def __init__(self) -> None:
        self._rows: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, row: tuple[Any, ...]) -> None:
        """One result as :func:`~backfarm.results.rows.stored_row` or :func:`~backfarm.results.rows.stored` made it."""
        self._rows.append(row)

    def table(self) -> pa.Table:
        """The rows added so far, as a table of :data:`SCHEMA`."""
        if not self._rows:
            return SCHEMA.empty_table()
        return pa.Table.from_arrays(
            [pa.array(column, type=f.type) for column, f in zip(zip(*self._rows, strict=True), SCHEMA, strict=True)],
            schema=SCHEMA,
        )


def table(records: Sequence[ResultRecord]) -> pa.Table:
    """``records`` as one table of :data:`SCHEMA` (in the same order)."""
    rows = Builder()
    for record in records:
        rows.append(row_format.stored(record))
    return rows.table()


def as_table(results: Sequence[ResultRecord] | pa.Table) -> pa.Table:
    """Results given as records or already as a table, as a table."""
    return results if isinstance(results, pa.Table) else table(results)


def records(data: pa.Table) -> list[ResultRecord]:
    """The records of a table of :data:`SCHEMA` (or any selection of its rows), in order."""
    return list(iter_records(data))


def iter_records(data: pa.Table) -> Iterator[ResultRecord]:
    """:func:`records`, one at a time."""
    return (row_format.record(row) for row in data.to_pylist())
