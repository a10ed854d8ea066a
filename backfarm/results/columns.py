"""Results as columns: a batch of :class:`ResultRecord` as one Arrow table (and back), the unit results are stored in.

Identity fields are dictionary-encoded strings (a batch shares its strategy, symbol, window, costs, source), every
metric is a typed column (``trades`` and ``wins`` int64, the rest float64; null = undefined), and the pictures a
record keeps in ``extra`` (the equity curve and trade list of :mod:`backfarm.engine.artifacts`) are structs with
their bytes raw, not base64, so Parquet's compression sees the numbers. Anything else in ``extra`` travels as
canonical JSON. :func:`records` gives back exactly the records :func:`table` was given.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa

from backfarm._util.ids import canonical_json
from backfarm.core.results import METRICS, ResultRecord

INT_METRICS = frozenset({"trades", "wins"})
"""Metrics counted in whole numbers; every other metric is a float."""
ARTIFACT_FORMAT = 1
"""The artifact format (:data:`backfarm.engine.artifacts.FORMAT`) whose bytes get columns of their own."""

_TEXT = pa.dictionary(pa.int32(), pa.string())
_EQUITY = pa.struct([(name, pa.int64()) for name in ("n", "t0", "dt", "k", "iw")] + [("data", pa.binary())])
_TRADES = pa.struct([(name, pa.int64()) for name in ("n", "k")] + [("data", pa.binary())])
SCHEMA = pa.schema(
    [
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("result_hash", pa.string(), nullable=False),
        pa.field("kind", _TEXT),
        pa.field("strategy", _TEXT),
        pa.field("strategy_version", _TEXT),
        pa.field("params", pa.string()),
        pa.field("symbol", _TEXT),
        pa.field("granularity", _TEXT),
        pa.field("start", _TEXT),
        pa.field("end", _TEXT),
        pa.field("source", _TEXT),
        pa.field("costs", _TEXT),
        pa.field("capital", pa.float64()),
        pa.field("candles_checksum", _TEXT),
        pa.field("engine_version", _TEXT),
        pa.field("bars", pa.int64()),
        pa.field("gaps", pa.int64()),
        pa.field("created_at", pa.float64()),
        *(pa.field(f"m_{m}", pa.int64() if m in INT_METRICS else pa.float64()) for m in METRICS),
        pa.field("equity", _EQUITY),
        pa.field("trades", _TRADES),
        pa.field("extra", pa.string()),
    ]
)
"""One row per result."""
FILTER_COLUMNS: tuple[str, ...] = ("strategy", "symbol", "granularity", "start", "end", "source", "kind")
"""The record fields a query can filter on (the column has the field's name)."""
PICTURES = ("equity", "trades", "extra")
"""Columns only a whole record needs (rankings and aggregates never read them)."""


def metric_column(metric: str) -> str:
    """The column holding ``metric``."""
    return f"m_{metric}"


class Builder:
    """The rows of a results table, added one result at a time from plain values: the path results take from the
    engine to storage without becoming :class:`ResultRecord` objects (and the one :func:`table` takes too)."""

    def __init__(self) -> None:
        self._columns: dict[str, list[Any]] = {field.name: [] for field in SCHEMA}

    def __len__(self) -> int:
        return len(self._columns["job_id"])

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
        or as base64 text."""
        cols = self._columns
        for name in _IDENTITY:
            cols[name].append(identity[name])
        cols["result_hash"].append(result_hash)
        cols["created_at"].append(created_at)
        for m in METRICS:
            cols[f"m_{m}"].append(metrics.get(m))
        rest = dict(extra)
        cols["equity"].append(_take_artifact(rest, "equity", ("n", "t0", "dt", "k", "iw")))
        cols["trades"].append(_take_artifact(rest, "trades", ("n", "k")))
        cols["extra"].append(canonical_json(rest) if rest else None)

    def table(self) -> pa.Table:
        """The rows added so far, as a table of :data:`SCHEMA`."""
        return pa.table(self._columns, schema=SCHEMA)


_IDENTITY: tuple[str, ...] = (
    "job_id", "kind", "strategy", "strategy_version", "params", "symbol", "granularity", "start", "end", "source",
    "costs", "capital", "candles_checksum", "engine_version", "bars", "gaps",
)  # fmt: skip
"""Columns :meth:`Builder.add` takes from ``identity``."""


def table(records: Sequence[ResultRecord]) -> pa.Table:
    """``records`` as one table of :data:`SCHEMA` (in the same order)."""
    rows = Builder()
    for r in records:
        identity = {name: getattr(r, name) for name in _IDENTITY}
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
    rows = data.to_pylist()
    for row in rows:
        extra: dict[str, Any] = json.loads(row["extra"]) if row["extra"] is not None else {}
        for name in ("equity", "trades"):
            art = row[name]
            if art is not None:
                extra[name] = {"v": ARTIFACT_FORMAT, **{k: v for k, v in art.items() if k != "data"}}
                extra[name]["data"] = base64.b64encode(art["data"]).decode("ascii")
        yield ResultRecord(
            job_id=row["job_id"],
            strategy=row["strategy"],
            strategy_version=row["strategy_version"],
            params=json.loads(row["params"]),
            symbol=row["symbol"],
            granularity=row["granularity"],
            start=row["start"],
            end=row["end"],
            source=row["source"],
            costs=json.loads(row["costs"]),
            capital=row["capital"],
            metrics={m: row[f"m_{m}"] for m in METRICS},
            candles_checksum=row["candles_checksum"],
            engine_version=row["engine_version"],
            bars=row["bars"],
            gaps=row["gaps"],
            kind=row["kind"],
            created_at=row["created_at"],
            extra=_ordered(extra),
        )


def _ordered(extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` with its keys sorted, as canonical JSON (and so every record read back) has them."""
    return {k: extra[k] for k in sorted(extra)}
