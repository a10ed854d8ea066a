"""The columns a stored result is made of, and a result read back from a row of them.

No Arrow here: readers (``backfarm leaderboard``, the dashboard's queries) get rows from DuckDB as plain values and
never pay for loading pyarrow. The Arrow schema and the tables writers build are in :mod:`backfarm.results.columns`.

Identity fields have a column each under their own name, every metric has one named ``m_{metric}`` (null =
undefined), each moment of the bar returns one named ``r_{moment}``, and the pictures a record keeps in ``extra`` (the
equity curve and trade list of :mod:`backfarm.engine.artifacts`, the daily returns of :mod:`backfarm.engine.returns`)
are structs of their integer fields and their raw bytes (not base64); anything else in ``extra`` is canonical JSON in
the ``extra`` column. Stores written before the moments and daily returns existed lack those columns: they read as
null.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from typing import Any

from backfarm._util.ids import canonical_json
from backfarm.core.results import METRICS, MOMENTS, ResultRecord

INT_METRICS = frozenset({"trades", "wins"})
"""Metrics counted in whole numbers; every other metric is a float."""
ARTIFACT_FORMAT = 1
"""The artifact format (:data:`backfarm.engine.artifacts.FORMAT`) whose bytes get columns of their own."""
EQUITY_FIELDS: tuple[str, ...] = ("n", "t0", "dt", "k", "iw")
"""Integer fields of a stored equity curve (beside its ``data``)."""
TRADES_FIELDS: tuple[str, ...] = ("n", "k")
"""Integer fields of a stored trade list (beside its ``data``)."""
DAILY_FIELDS: tuple[str, ...] = ("t0", "k")
"""Integer fields of stored daily (block) returns (beside their ``data``)."""
ARTIFACTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("equity", EQUITY_FIELDS),
    ("trades", TRADES_FIELDS),
    ("daily", DAILY_FIELDS),
)
"""The artifacts with struct columns of their own (each of format version 1), with their integer fields."""
IDENTITY: tuple[str, ...] = (
    "job_id", "kind", "strategy", "strategy_version", "params", "symbol", "granularity", "start", "end", "source",
    "costs", "capital", "candles_checksum", "engine_version", "bars", "gaps",
)  # fmt: skip
"""Columns holding a record's identity fields (``params`` and ``costs`` as canonical JSON text)."""
FILTER_COLUMNS: tuple[str, ...] = ("strategy", "symbol", "granularity", "start", "end", "source", "kind")
"""The record fields a query can filter on (the column has the field's name)."""
PICTURES: tuple[str, ...] = ("equity", "trades", "daily", "extra")
"""Columns only a whole record needs (rankings and aggregates never read them)."""


def metric_column(metric: str) -> str:
    """The column holding ``metric``."""
    return f"m_{metric}"


def moment_column(moment: str) -> str:
    """The column holding a moment of the bar returns."""
    return f"r_{moment}"


FACTS: tuple[str, ...] = (
    *IDENTITY[:1],
    "result_hash",
    *IDENTITY[1:],
    "created_at",
    *(metric_column(m) for m in METRICS),
    *(moment_column(m) for m in MOMENTS),
)
"""Every column but the pictures, in stored order."""


def stored_row(
    job_id: str,
    result_hash: str,
    identity: tuple[Any, ...],
    created_at: float,
    metrics: Mapping[str, float | int | None],
    moments: Mapping[str, float | None],
    equity: Mapping[str, Any] | None,
    trades: Mapping[str, Any] | None,
    daily: Mapping[str, Any] | None,
    extra: str | None,
) -> tuple[Any, ...]:
    """One result as a row of the stored columns (:data:`FACTS`, then :data:`PICTURES`), from values already in
    their stored form: ``identity`` the fields of ``IDENTITY[1:]`` in order, ``metrics`` and ``moments`` rounded
    (:func:`~backfarm.core.results.round_metric`: undefined is ``None``; no moments: empty), the artifacts as struct
    rows (their fields and ``data`` as bytes; other keys are ignored), ``extra`` canonical JSON or ``None``. No
    checks: the runner builds every result this way."""
    return (
        job_id,
        result_hash,
        *identity,
        created_at,
        *[metrics.get(m) for m in METRICS],
        *[moments.get(m) for m in MOMENTS],
        equity,
        trades,
        daily,
        extra,
    )


def stored(record: ResultRecord) -> tuple[Any, ...]:
    """:func:`stored_row` of a whole record (artifacts of the known format get their struct columns, anything else
    in ``extra`` travels as JSON): what a store writes for a record it is given."""
    rest = dict(record.extra)
    equity, trades, daily = (_take_artifact(rest, name, fields) for name, fields in ARTIFACTS)
    text = {"params": canonical_json(record.params), "costs": canonical_json(record.costs)}
    identity = tuple(text[name] if name in text else getattr(record, name) for name in IDENTITY[1:])
    metrics = {m: _metric(record.metrics.get(m)) for m in METRICS}
    return stored_row(
        record.job_id,
        record.result_hash,
        identity,
        record.created_at,
        metrics,
        {m: _metric(record.moments.get(m)) for m in MOMENTS},
        equity,
        trades,
        daily,
        canonical_json(rest) if rest else None,
    )


def _metric(value: float | int | None) -> float | int | None:
    """A metric as stored: non-finite floats are undefined (null), as every ranking treats them (a NaN would
    otherwise sort above every number)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


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


def record(row: Mapping[str, Any]) -> ResultRecord:
    """The record of one row (a mapping of column name to value, with or without the picture columns: without
    them, ``extra`` is empty)."""
    text = row.get("extra")
    extra: dict[str, Any] = json.loads(text) if text is not None else {}
    for name, _ in ARTIFACTS:
        art = row.get(name)
        if art is not None:
            extra[name] = {"v": ARTIFACT_FORMAT, **{k: v for k, v in art.items() if k != "data"}}
            extra[name]["data"] = base64.b64encode(art["data"]).decode("ascii")
    return ResultRecord(
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
        metrics={m: row[metric_column(m)] for m in METRICS},
        candles_checksum=row["candles_checksum"],
        engine_version=row["engine_version"],
        bars=row["bars"],
        gaps=row["gaps"],
        kind=row["kind"],
        created_at=row["created_at"],
        extra={k: extra[k] for k in sorted(extra)},  # sorted, as canonical JSON (and so every record read back) has it
        moments=_moments(row),
    )


def _moments(row: Mapping[str, Any]) -> dict[str, float | None]:
    """The moments of a row; none (empty) when it was stored without them (every one is null or absent: ``mean``
    and ``std`` are defined for every stored backtest)."""
    values = {m: row.get(moment_column(m)) for m in MOMENTS}
    return values if any(v is not None for v in values.values()) else {}


FLAT: dict[str, str] = {
    "job_id": "text", "kind": "text", "strategy": "text", "strategy_version": "text", "symbol": "text",
    "granularity": "text", "start": "text", "end": "text", "source": "text", "bars": "int", "gaps": "int",
    "capital": "float", "fee_bps": "float", "spread_bps": "float", "slippage_bps": "float",
    **{m: "int" if m in INT_METRICS else "float" for m in METRICS},
    **{moment_column(m): "float" for m in MOMENTS},
}  # fmt: skip
"""The columns of a flat row before the parameters, with their kind (the moments of the bar returns under their
stored names: ``r_mean`` …; empty for results stored without them)."""


def param_column(name: str) -> str:
    """The flat-row column of parameter ``name`` (prefixed when it would clash with a fixed column)."""
    return f"param_{name}" if name in FLAT else name


def flat_row(record: ResultRecord) -> dict[str, Any]:
    """One result as a flat row (for tables and exports): identity, costs, every metric, each parameter as a column
    of its own (:func:`param_column`), and ``params`` as JSON."""
    costs = record.costs
    row: dict[str, Any] = {
        "job_id": record.job_id,
        "kind": record.kind,
        "strategy": record.strategy,
        "strategy_version": record.strategy_version,
        "symbol": record.symbol,
        "granularity": record.granularity,
        "start": record.start,
        "end": record.end,
        "source": record.source,
        "bars": record.bars,
        "gaps": record.gaps,
        "capital": record.capital,
        "fee_bps": costs.get("fee_bps"),
        "spread_bps": costs.get("spread_bps"),
        "slippage_bps": costs.get("slippage_bps"),
    }
    for name in METRICS:
        row[name] = record.metrics.get(name)
    for name in MOMENTS:
        row[moment_column(name)] = record.moments.get(name)
    for key, value in record.params.items():
        row[param_column(key)] = value
    row["params"] = json.dumps(record.params, sort_keys=True)
    return row
