"""What the dashboard and the report show, as JSON-ready dicts read from any result store.

Leaderboard rows leave the stored artifacts out (a row is a few hundred bytes; its curve is fetched when the row is
opened); :func:`detail` returns the whole record, artifacts included, and the page decodes them (format in
:mod:`backfarm.engine.artifacts`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from backfarm.core.formatting import PERCENT
from backfarm.core.results import LOWER_IS_BETTER, METRICS, AggregateRow, Filters, ResultRecord, SweepInfo
from backfarm.errors import ValidationError, did_you_mean
from backfarm.results import ranking
from backfarm.results.store import ResultStore

KINDS: tuple[str, ...] = ("backtest", "paper")
DEFAULT_METRIC = "sharpe"
DEFAULT_LIMIT = 100
MAX_LIMIT = 2000
"""Most rows one leaderboard request may ask for."""
MAX_CURVES = 20
"""Most curves one overlay request may ask for."""
FILTER_PARAMS: tuple[str, ...] = ("sweep", "strategy", "symbol", "kind")
"""Filters the page offers (the store supports more: ``granularity``, ``source``, ``start``, ``end``)."""


@dataclass(frozen=True)
class Query:
    """A leaderboard request: rank by ``metric`` (best first unless ``ascending`` says otherwise), ``limit`` rows."""

    metric: str = DEFAULT_METRIC
    ascending: bool | None = None
    limit: int = DEFAULT_LIMIT
    filters: Filters = field(default_factory=Filters)


def parse_filters(params: Mapping[str, str], store: ResultStore | None = None) -> Filters:
    """Filters from query parameters (empty = any); a sweep id prefix is resolved to the full id via ``store``."""
    values = {name: (params.get(name) or "").strip() or None for name in FILTER_PARAMS}
    if values["kind"] is not None and values["kind"] not in KINDS:
        raise ValidationError(did_you_mean("kind", values["kind"], KINDS))
    if values["sweep"] is not None and store is not None:
        info = store.sweep(values["sweep"])
        if info is None:
            raise ValidationError(f"unknown sweep '{values['sweep']}'")
        values["sweep"] = info.sweep_id
    return Filters(**values)


def parse_query(params: Mapping[str, str], store: ResultStore | None = None) -> Query:
    """A :class:`Query` from query parameters ``metric``, ``order`` (asc/desc/best), ``limit`` and the filters."""
    metric = params.get("metric") or DEFAULT_METRIC
    ranking.check_metric(metric)
    order = (params.get("order") or "best").lower()
    if order not in ("asc", "desc", "best"):
        raise ValidationError(did_you_mean("order", order, ("asc", "desc", "best")))
    raw = params.get("limit") or str(DEFAULT_LIMIT)
    try:
        limit = int(raw)
    except ValueError:
        raise ValidationError(f"limit must be a whole number, got {raw!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    ascending = None if order == "best" else order == "asc"
    return Query(metric, ascending, limit, parse_filters(params, store))


def _clean(value: Any) -> Any:
    """A metric value for JSON: non-finite floats become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def row(record: ResultRecord) -> dict[str, Any]:
    """One leaderboard row: identity, parameters, every metric; artifacts left out (``has_curve`` says if stored)."""
    return {
        "job_id": record.job_id,
        "strategy": record.strategy,
        "strategy_version": record.strategy_version,
        "params": record.params,
        "symbol": record.symbol,
        "granularity": record.granularity,
        "start": record.start,
        "end": record.end,
        "source": record.source,
        "kind": record.kind,
        "bars": record.bars,
        "capital": record.capital,
        "created_at": record.created_at,
        "metrics": {m: _clean(record.metrics.get(m)) for m in METRICS},
        "has_curve": "equity" in record.extra,
        "session": record.extra.get("session"),
    }


def leaderboard(store: ResultStore, query: Query) -> dict[str, Any]:
    """The best ``query.limit`` results by ``query.metric`` under ``query.filters``."""
    records = store.top(query.metric, query.limit, query.filters, ascending=query.ascending)
    return {
        "metric": query.metric,
        "ascending": ranking.is_ascending(query.metric, query.ascending),
        "filters": _filters_dict(query.filters),
        "rows": [row(r) for r in records],
    }


def _filters_dict(filters: Filters) -> dict[str, str | None]:
    return {name: getattr(filters, name) for name in FILTER_PARAMS}


def aggregate(rows: Iterable[AggregateRow]) -> list[dict[str, Any]]:
    """Per-strategy (or per-symbol) summaries as dicts (field names of :class:`AggregateRow`)."""
    return [{k: _clean(v) for k, v in asdict(r).items()} for r in rows]


def strategies(store: ResultStore, filters: Filters) -> list[dict[str, Any]]:
    """The per-strategy table under ``filters``."""
    return aggregate(store.aggregate("strategy", filters))


def sweep(info: SweepInfo) -> dict[str, Any]:
    """A sweep with its progress and the headline of its spec."""
    spec = info.spec or {}
    return {
        "sweep_id": info.sweep_id,
        "created_at": info.created_at,
        "source": info.source,
        "strategies": list(spec.get("strategies") or []),
        "symbols": list(spec.get("symbols") or []),
        "granularity": spec.get("granularity"),
        "days": spec.get("days"),
        "start": spec.get("start"),
        "end": spec.get("end"),
        "window": spec.get("window"),
        "total": info.total,
        "done": info.done,
        "dead": info.dead,
        "complete": info.complete,
    }


def sweeps(store: ResultStore) -> list[dict[str, Any]]:
    """Every sweep, newest first, with progress."""
    return [sweep(info) for info in store.sweeps()]


def facets(sweep_rows: Iterable[Mapping[str, Any]], known_strategies: Iterable[str] = ()) -> dict[str, list[str]]:
    """Values the filter menus offer: strategies and symbols named by any sweep (plus registered strategies)."""
    names: set[str] = set(known_strategies)
    symbols: set[str] = set()
    for s in sweep_rows:
        names.update(s.get("strategies") or [])
        symbols.update(s.get("symbols") or [])
    return {"strategies": sorted(names), "symbols": sorted(symbols), "kinds": list(KINDS)}


def paper(store: ResultStore, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """The newest ``limit`` paper results (``kind=paper``: final metrics of paper-trading accounts)."""
    records = sorted(store.iter_results(Filters(kind="paper")), key=lambda r: (-r.created_at, r.job_id))
    return [row(r) for r in records[:limit]]


def detail(record: ResultRecord) -> dict[str, Any]:
    """Everything about one result, artifacts included (the page draws its equity curve, drawdown and trades)."""
    data = record.to_dict()
    data["metrics"] = {m: _clean(record.metrics.get(m)) for m in METRICS}
    return data


def find_result(store: ResultStore, job_id: str) -> ResultRecord:
    """The result with id ``job_id``, or the only one whose id starts with it (among sweeps and paper results)."""
    job_id = job_id.strip()
    record = store.get(job_id) if job_id else None
    if record is not None:
        return record
    if len(job_id) < 4:
        raise ValidationError(f"unknown result '{job_id}' (give at least 4 characters of the job id)")
    matches: set[str] = set()
    for info in store.sweeps():
        matches.update(j for j in store.manifest(info.sweep_id) if j.startswith(job_id))
    matches.update(r.job_id for r in store.iter_results(Filters(kind="paper")) if r.job_id.startswith(job_id))
    found = sorted(store.existing(matches) if len(matches) > 1 else matches)
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise ValidationError(f"job id prefix '{job_id}' is ambiguous (matches {shown}); give more characters")
    record = store.get(found[0]) if found else None
    if record is None:
        raise ValidationError(f"unknown result '{job_id}' (see `backfarm leaderboard`)")
    return record


def curves(store: ResultStore, job_ids: Iterable[str]) -> dict[str, Any]:
    """The stored equity artifacts of up to :data:`MAX_CURVES` results (for the overlay of the top rows)."""
    ids = list(dict.fromkeys(job_ids))
    if len(ids) > MAX_CURVES:
        raise ValidationError(f"at most {MAX_CURVES} curves at once, got {len(ids)}")
    out: dict[str, Any] = {}
    for job_id in ids:
        record = store.get(job_id)
        if record is not None and "equity" in record.extra:
            out[job_id] = {"equity": record.extra["equity"], "capital": record.capital}
    return out


def meta(store_label: str, refresh_s: float, version: str) -> dict[str, Any]:
    """What the page needs before its first query: metric names and directions, formatting hints, refresh period."""
    return {
        "store": store_label,
        "version": version,
        "refresh_s": refresh_s,
        "metrics": list(METRICS),
        "lower_is_better": sorted(LOWER_IS_BETTER),
        "percent": list(PERCENT),
        "kinds": list(KINDS),
        "default_metric": DEFAULT_METRIC,
    }
