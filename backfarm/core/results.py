"""What the result stores hold: one ``ResultRecord`` per job, sweeps with their manifests, filters, aggregates.

Every store (embedded SQLite, Redis) stores and returns exactly these objects and passes the same contract suite
(``tests/results/contract.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from json.encoder import encode_basestring_ascii as _json_string  # what json.dumps uses for str (ensure_ascii)
from typing import Any

from backfarm._util.ids import canonical_json

METRICS: tuple[str, ...] = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "trades",
    "wins",
    "win_rate",
    "profit_factor",
    "avg_trade",
    "exposure",
    "turnover",
    "fees_paid",
)
"""Every metric a result carries, in display order; definitions live in :mod:`backfarm.engine.metrics`."""

MOMENTS: tuple[str, ...] = ("mean", "std", "skew", "kurt")
"""The moments of the bar returns a result carries besides its metrics; definitions in
:mod:`backfarm.engine.returns`."""

LOWER_IS_BETTER = frozenset({"volatility", "fees_paid", "turnover"})
"""Metrics ranked ascending; every other metric ranks descending. ``null`` always ranks last."""

FILTER_FIELDS: tuple[str, ...] = ("sweep", "strategy", "symbol", "granularity", "start", "end", "source", "kind")


def metric_order(metric: str) -> str:
    """``"asc"`` or ``"desc"``: the direction in which ``metric`` ranks best first."""
    return "asc" if metric in LOWER_IS_BETTER else "desc"


def round_metric(value: float | int | None) -> float | int | None:
    """Round to 12 significant digits (ints and nulls unchanged) so hashes and scores are stable."""
    if value is None or isinstance(value, int):
        return value
    if not math.isfinite(value):
        return None
    return float(f"{value:.12g}")


@dataclass(frozen=True)
class ResultRecord:
    """The outcome of one job (a backtest, or a paper session's account)."""

    job_id: str
    strategy: str
    strategy_version: str
    params: dict[str, int | float]
    symbol: str
    granularity: str
    start: str
    """Window start, ISO 8601 UTC (``2026-10-24T00:00:00Z``), inclusive."""
    end: str
    """Window end, ISO 8601 UTC, exclusive."""
    source: str
    costs: dict[str, Any]
    capital: float
    metrics: dict[str, float | int | None]
    candles_checksum: str
    engine_version: str
    bars: int
    gaps: int = 0
    kind: str = "backtest"
    """``backtest`` or ``paper``."""
    created_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    """Optional artifacts (downsampled equity curve, trade list, daily returns, paper session id) — not part of the
    hash."""
    moments: dict[str, float | None] = field(default_factory=dict)
    """The moments of the bar returns (``mean``, ``std``, ``skew``, ``kurt``: :mod:`backfarm.engine.returns`),
    rounded as metrics are; not part of the hash. Empty for paper results and results stored before backfarm 0.3."""

    @property
    def result_hash(self) -> str:
        """Hash of the rounded metrics and the data fingerprint: equal for reproducible reruns."""
        return result_hash(self.metrics, self.candles_checksum, self.engine_version)

    def field_value(self, name: str) -> Any:
        """A filterable field (see ``FILTER_FIELDS``) or a metric by name."""
        if name in METRICS:
            return self.metrics.get(name)
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def to_json(self) -> str:
        """Canonical JSON of :meth:`to_dict`."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultRecord:
        """Inverse of :meth:`to_dict`; unknown keys are ignored so old readers survive new fields."""
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str | bytes) -> ResultRecord:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def result_hash(metrics: Mapping[str, Any], candles_checksum: str, engine_version: str) -> str:
    """The result hash of these metrics on candles with this checksum, by this engine: BLAKE2b-128 of the canonical
    JSON of the metrics rounded to 12 significant digits (:func:`round_metric`), the checksum and the engine version.
    Equal for reproducible reruns; a rerun that disagrees is a conflict."""
    text = _hash_text(metrics, candles_checksum, engine_version)
    if text is None:
        payload = {
            "metrics": {k: round_metric(metrics.get(k)) for k in METRICS},
            "candles": candles_checksum,
            "engine": engine_version,
        }
        text = canonical_json(payload)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def round_and_hash(
    metrics: Mapping[str, Any], candles_checksum: str, engine_version: str
) -> tuple[dict[str, float | int | None], str]:
    """``{m: round_metric(metrics[m]) for m in METRICS}`` and :func:`result_hash` of them, in one pass: each
    value is formatted once (the hash's text and the rounded value come from the same digits). What the runner
    calls for every result it builds."""
    rounded: dict[str, float | int | None] = {}
    texts: dict[str, str] = {}
    for name in METRICS:
        value = metrics.get(name)
        text = _rounded_text(value) if value.__class__ is float else None
        if text is not None:
            rounded[name] = float(text)
        else:
            rounded[name] = round_metric(value)
            text = _json_scalar(rounded[name])
            if text is None:
                return rounded, result_hash(rounded, candles_checksum, engine_version)
        texts[name] = text
    head, tail = _json_scalar(candles_checksum), _json_scalar(engine_version)
    if head is None or tail is None:
        return rounded, result_hash(rounded, candles_checksum, engine_version)
    body = ",".join(key + texts[name] for name, key in _HASH_KEYS)
    text = '{"candles":' + head + ',"engine":' + tail + ',"metrics":{' + body + "}}"
    return rounded, hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


_HASH_KEYS: tuple[tuple[str, str], ...] = tuple((k, f"{_json_string(k)}:") for k in sorted(METRICS))
"""(metric, its JSON key) in canonical (sorted) order."""


def _json_scalar(value: Any) -> str | None:
    """``value`` as :func:`canonical_json` writes it, for the plain types it handles here; else ``None``."""
    cls = value.__class__
    if cls is float:
        return float.__repr__(value) if math.isfinite(value) else None
    if cls is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if cls is str:
        return _json_string(value)
    if cls is bool:
        return "true" if value else "false"
    return None


def _rounded_text(value: float) -> str | None:
    """``_json_scalar(round_metric(value))`` for a finite float, in one formatting step instead of three.

    ``f"{value:.12g}"`` is the rounded value's shortest round-trip text (a decimal of at most 12 significant digits
    is the only one of at most 15 that maps to its double), so it equals ``repr(round_metric(value))`` up to
    notation: repr writes ``.0`` on whole numbers and uses fixed notation for decimal exponents 12 to 15, where
    ``%g`` switches to ``e+``. Those cases, subnormal numbers (fewer significant bits, so the uniqueness argument
    fails) and non-finite values are left to the general path (``None``).
    """
    if 0.0 < abs(value) < sys.float_info.min:
        return None
    text = f"{value:.12g}"
    if "n" in text:  # nan, inf
        return None
    if "e" in text:
        return None if 12 <= int(text.partition("e")[2]) <= 15 else text
    return text if "." in text else text + ".0"


def _hash_text(metrics: Mapping[str, Any], candles: object, engine: object) -> str | None:
    """``canonical_json`` of the result-hash payload, built directly (the hash is computed for every result and
    the generic encoder's key sorting dominates its cost); ``None`` when a value needs the generic encoder."""
    parts = []
    try:
        for name, key in _HASH_KEYS:
            value = metrics.get(name)
            text = _rounded_text(value) if value.__class__ is float else None
            if text is None:
                text = _json_scalar(round_metric(value))
            if text is None:
                return None
            parts.append(key + text)
    except (TypeError, ValueError):  # a value round_metric cannot take: let the generic path raise the same way
        return None
    head, tail = _json_scalar(candles), _json_scalar(engine)
    if head is None or tail is None:
        return None
    return '{"candles":' + head + ',"engine":' + tail + ',"metrics":{' + ",".join(parts) + "}}"


@dataclass(frozen=True)
class Filters:
    """Conditions on result fields; ``None`` means any. ``sweep`` restricts to a sweep's manifest."""

    sweep: str | None = None
    strategy: str | None = None
    symbol: str | None = None
    granularity: str | None = None
    start: str | None = None
    end: str | None = None
    source: str | None = None
    kind: str | None = None

    def matches(self, record: ResultRecord) -> bool:
        """True if ``record`` passes every field condition (``sweep`` is the store's business)."""
        for name in FILTER_FIELDS:
            wanted = getattr(self, name)
            if name != "sweep" and wanted is not None and getattr(record, name) != wanted:
                return False
        return True


@dataclass(frozen=True)
class SweepRecord:
    """A submitted sweep: its id, the spec that produced it, and the manifest of expected job ids."""

    sweep_id: str
    created_at: float
    spec: dict[str, Any]
    job_ids: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class SweepInfo:
    """A sweep and its progress. Complete when ``done + dead == total``."""

    sweep_id: str
    created_at: float
    spec: dict[str, Any]
    source: str
    total: int
    done: int
    dead: int

    @property
    def complete(self) -> bool:
        """Every expected job is either done or dead."""
        return self.done + self.dead >= self.total


@dataclass(frozen=True)
class PutReport:
    """What a ``put`` did: new rows, identical re-puts, and conflicting results (original kept)."""

    inserted: int = 0
    duplicates: int = 0
    conflicts: int = 0


@dataclass(frozen=True)
class Conflict:
    """A recomputation that disagreed with the stored result for the same job id."""

    job_id: str
    stored_hash: str
    new_hash: str
    at: float


@dataclass(frozen=True)
class AggregateRow:
    """Per-strategy or per-symbol summary over a set of results.

    ``mean_return`` and ``mean_sharpe`` average over results where the metric is defined; ``worst_drawdown`` is the
    minimum max_drawdown; ``win_rate`` is winning closed trades over all closed trades of the group (``None`` when
    the group closed no trade).
    """

    key: str
    results: int
    mean_return: float | None
    mean_sharpe: float | None
    worst_drawdown: float | None
    trades: int
    win_rate: float | None
