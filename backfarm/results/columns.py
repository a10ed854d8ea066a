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
from collections.abc import Iterator, Sequence
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


def table(records: Sequence[ResultRecord]) -> pa.Table:
    """``records`` as one table of :data:`SCHEMA` (in the same order)."""
    columns: dict[str, list[Any]] = {field.name: [] for field in SCHEMA}
    for r in records:
        columns["job_id"].append(r.job_id)
        columns["result_hash"].append(r.result_hash)
        for name in ("kind", "strategy", "strategy_version", "symbol", "granularity", "start", "end", "source"):
            columns[name].append(getattr(r, name))
        columns["params"].append(canonical_json(r.params))
        columns["costs"].append(canonical_json(r.costs))
        for name in ("capital", "candles_checksum", "engine_version", "bars", "gaps", "created_at"):
            columns[name].append(getattr(r, name))
        for m in METRICS:
            columns[f"m_{m}"].append(r.metrics.get(m))
        extra = dict(r.extra)
        columns["equity"].append(_take_artifact(extra, "equity", ("n", "t0", "dt", "k", "iw")))
        columns["trades"].append(_take_artifact(extra, "trades", ("n", "k")))
        columns["extra"].append(canonical_json(extra) if extra else None)
    return pa.table(columns, schema=SCHEMA)


def _take_artifact(extra: dict[str, Any], name: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """Remove and return ``extra[name]`` as a struct row when it is an artifact of the known format, else ``None``
    (then it stays in ``extra`` and travels as JSON)."""
    art = extra.get(name)
    if not isinstance(art, dict) or set(art) != {"v", *fields, "data"} or art["v"] != ARTIFACT_FORMAT:
        return None
    if not all(type(art[f]) is int for f in fields) or not isinstance(art["data"], str):
        return None
    try:
        data = base64.b64decode(art["data"], validate=True)
    except ValueError:
        return None
    if base64.b64encode(data).decode("ascii") != art["data"]:
        return None  # not in the canonical spelling: the bytes would not read back as the same text
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
