"""Results as Arrow tables: a batch of results as one table (and back), the unit in which they travel and are written.

The columns are those of :mod:`backfarm.results.rows`: identity fields as dictionary-encoded strings (a batch shares
its strategy, symbol, window, costs, source), every metric a typed column (``trades`` and ``wins`` int64, the rest
float64; null = undefined), the pictures as structs with their bytes raw, so Parquet's compression sees the numbers.
:func:`records` gives back exactly the records :func:`table` was given.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from backfarm._util.ids import canonical_json
from backfarm.core.results import METRICS, ResultRecord
from backfarm.results import rows as row_format
from backfarm.results.rows import ARTIFACT_FORMAT, EQUITY_FIELDS, IDENTITY, INT_METRICS, TRADES_FIELDS, metric_column

_TEXT = pa.dictionary(pa.int32(), pa.string())
_EQUITY = pa.struct([(name, pa.int64()) for name in EQUITY_FIELDS] + [("data", pa.binary())])
_TRADES = pa.struct([(name, pa.int64()) for name in TRADES_FIELDS] + [("data", pa.binary())])
_TYPES: dict[str, pa.DataType] = {
    "job_id": pa.string(),
    "result_hash": pa.string(),
    "params": pa.string(),
    "capital": pa.float64(),
    "bars": pa.int64(),
    "gaps": pa.int64(),
    "created_at": pa.float64(),
    **{metric_column(m): pa.int64() if m in INT_METRICS else pa.float64() for m in METRICS},
    "equity": _EQUITY,
    "trades": _TRADES,
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
    """The rows of a results table, added one result at a time from plain values: the path results take from the
    engine to storage without becoming :class:`ResultRecord` objects (and the one :func:`table` takes too). Rows are
    kept as tuples in :data:`SCHEMA` order and turned into columns once, by :meth:`table`."""

    def __init__(self) -> None:
        self._rows: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(
        self,
        identity: Mapping[str, Any],
        metrics: Mapping[str, float | int | None],
        result_hash: str,
        created_at: float,
        extra: Mapping[str, Any],
    ) -> None:
        """One result: ``identity`` holds every other field of a record by its name (``params`` and ``costs`` as
        canonical JSON text), ``metrics`` its (rounded) metrics. Artifacts in ``extra`` may carry their data as bytes
        or as base64 text; artifacts that are not of the known format stay in ``extra`` (JSON)."""
        rest = dict(extra)
        equity = _take_artifact(rest, "equity", EQUITY_FIELDS)
        trades = _take_artifact(rest, "trades", TRADES_FIELDS)
        self.append(
            identity["job_id"],
            result_hash,
            tuple(identity[name] for name in IDENTITY[1:]),
            created_at,
            {m: _metric(metrics.get(m)) for m in METRICS},
            equity,
            trades,
            canonical_json(rest) if rest else None,
        )

    def append(
        self,
        job_id: str,
        result_hash: str,
        identity: tuple[Any, ...],
        created_at: float,
        metrics: Mapping[str, float | int | None],
        equity: Mapping[str, Any] | None,
        trades: Mapping[str, Any] | None,
        extra: str | None,
    ) -> None:
        """One result from values already in their stored form: ``identity`` the fields of ``IDENTITY[1:]`` in
        order, the artifacts as struct rows (their fields with ``data`` as bytes; other keys are ignored), ``extra``
        as canonical JSON or ``None``. No checks: the caller built them (the runner does, for every result)."""
        self._rows.append(
            (
                job_id,
                result_hash,
                *identity,
                created_at,
                *[_metric(metrics.get(m)) for m in METRICS],
                equity,
                trades,
                extra,
            )
        )

    def table(self) -> pa.Table:
        """The rows added so far, as a table of :data:`SCHEMA`."""
        if not self._rows:
            return SCHEMA.empty_table()
        return pa.Table.from_arrays(
            [pa.array(column, type=f.type) for column, f in zip(zip(*self._rows, strict=True), SCHEMA, strict=True)],
            schema=SCHEMA,
        )


def _metric(value: float | int | None) -> float | int | None:
    """A metric as stored: non-finite floats are undefined (null), as every ranking treats them (a NaN would
    otherwise sort above every number)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def table(records: Sequence[ResultRecord]) -> pa.Table:
    """``records`` as one table of :data:`SCHEMA` (in the same order)."""
    rows = Builder()
    for r in records:
        identity = {name: getattr(r, name) for name in IDENTITY}
        identity["params"] = canonical_json(r.params)
        identity["costs"] = canonical_json(r.costs)
        rows.add(identity, r.metrics, r.result_hash, r.created_at, r.extra)
    return rows.table()


def as_table(results: Sequence[ResultRecord] | pa.Table) -> pa.Table:
    """Results given as records or already as a table, as a table."""
    return results if isinstance(results, pa.Table) else table(results)


def _take_artifact(extra: dict[str, Any], name: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """Remove and return ``extra[name]`` as a struct row when it is an artifact of the known format, else ``None``
    (then it stays in ``extra`` and travels as JSON)."""
    art = extra.get(name)
    if not isinstance(art, dict) or set(art) != {"v", *fields, "data"} or art["v"] != ARTIFACT_FORMAT:
        return None
    if not all(type(art[f]) is int for f in fields):
        return None
    data = art["data"]
    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except ValueError:
            return None
        if base64.b64encode(data).decode("ascii") != art["data"]:
            return None  # not in the canonical spelling: the bytes would not read back as the same text
    elif not isinstance(data, bytes):
        return None
    row: dict[str, Any] = {f: art[f] for f in fields}
    row["data"] = data
    del extra[name]
    return row


def records(data: pa.Table) -> list[ResultRecord]:
    """The records of a table of :data:`SCHEMA` (or any selection of its rows), in order."""
    return list(iter_records(data))


def iter_records(data: pa.Table) -> Iterator[ResultRecord]:
    """:func:`records`, one at a time."""
    return (row_format.record(row) for row in data.to_pylist())
