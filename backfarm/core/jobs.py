"""Jobs and batches: the unit of work, its content-hash id, and groups of jobs that share candles.

A job is one (strategy, params, symbol, granularity, window, costs, capital, source). Its id hashes the canonical
JSON of all of that plus the strategy version, the strategy interface version and the engine version: identical
work has an identical id, so a result already stored is reused instead of recomputed, across sweeps too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _json_string  # what canonical_json writes a str as
from typing import Any

from backfarm._util.ids import canonical_json, short_hash, text_hash
from backfarm.core.costs import Costs
from backfarm.core.versions import ENGINE_VERSION, INTERFACE_VERSION

ParamValue = int | float
Params = dict[str, ParamValue]
"""A strategy's parameter values by name (:mod:`backfarm.strategies.base` declares and checks them)."""
LOOKAHEAD_LABEL = "+lookahead"
"""Ends the strategy version of jobs of a strategy that failed the lookahead check and ran under
``--allow-lookahead``: every result of it carries the label (:mod:`backfarm.sweeps.lookahead`)."""
DataKey = tuple[str, str, str, str, str]
"""(source, symbol, granularity, start, end): jobs with equal keys share candles."""


def _params_json(params: Mapping[str, ParamValue]) -> str:
    """``canonical_json(params)``, written directly for the usual case (str keys, int and finite float values)."""
    parts = []
    for key in sorted(params):
        value = params[key]
        if key.__class__ is not str or value.__class__ not in (int, float) or not math.isfinite(value):
            return canonical_json(dict(params))
        parts.append(_json_string(key) + ":" + (int.__repr__ if value.__class__ is int else float.__repr__)(value))
    return "{" + ",".join(parts) + "}"


@dataclass(frozen=True)
class Job:
    """One backtest to run. ``start``/``end`` are ISO 8601 UTC strings, ``[start, end)``."""

    strategy: str
    strategy_version: str
    params: Params
    symbol: str
    granularity: str
    start: str
    end: str
    source: str
    costs: Costs
    capital: float
    job_id: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.job_id:
            object.__setattr__(self, "job_id", short_hash(self.identity()))

    def identity(self) -> dict[str, Any]:
        """Everything that determines the result; hashed into the job id."""
        return {
            "strategy": self.strategy,
            "strategy_version": self.strategy_version,
            "interface": INTERFACE_VERSION,
            "engine": ENGINE_VERSION,
            "params": {k: self.params[k] for k in sorted(self.params)},
            "symbol": self.symbol,
            "granularity": self.granularity,
            "start": self.start,
            "end": self.end,
            "source": self.source,
            "costs": self.costs.to_dict(),
            "capital": float(self.capital),
        }

    @classmethod
    def id_maker(cls, template: Job) -> Callable[[Params], str]:
        """The ids of jobs equal to ``template`` but for their parameters, without encoding the shared fields again
        for each: a job's canonical identity JSON is the shared text with its parameters' JSON in their slot (keys
        sorted: ``params`` sits between ``interface`` and ``source``), so the ids equal those :meth:`identity` gives
        (a test checks). Expanding a sweep of 10,000 jobs spends ~10 µs less per job."""
        slot = "\x00params\x00"
        head, _, tail = canonical_json({**template.identity(), "params": slot}).partition(canonical_json(slot))

        def job_id(params: Params) -> str:
            return text_hash(head + _params_json(params) + tail)

        return job_id

    @property
    def data_key(self) -> DataKey:
        """(source, symbol, granularity, start, end): jobs with equal keys share candles."""
        return (self.source, self.symbol, self.granularity, self.start, self.end)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (task messages carry this, never candles)."""
        data = self.identity()
        data["job_id"] = self.job_id
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """Inverse of :meth:`to_dict`; the id is recomputed and must match when given."""
        job = cls(
            strategy=data["strategy"],
            strategy_version=data["strategy_version"],
            params=dict(data["params"]),
            symbol=data["symbol"],
            granularity=data["granularity"],
            start=data["start"],
            end=data["end"],
            source=data["source"],
            costs=Costs(**data["costs"]),
            capital=float(data["capital"]),
        )
        given = data.get("job_id")
        if given and given != job.job_id:
            raise ValueError(f"job id mismatch: message says {given}, content hashes to {job.job_id}")
        return job


@dataclass(frozen=True)
class Batch:
    """Jobs that share one candle window, run together so the window is loaded (and its indicators built) once."""

    jobs: tuple[Job, ...]
    batch_id: str = field(default="", compare=False)
    curves: bool = True
    """Store each result's equity curve and trades with it (``extra``); off, results are ~6x smaller and a sweep
    runs ~25% faster, and the dashboard recomputes a curve when one is opened."""

    def __post_init__(self) -> None:
        if not self.jobs:
            raise ValueError("a batch needs at least one job")
        keys = {j.data_key for j in self.jobs}
        if len(keys) != 1:
            raise ValueError("all jobs of a batch must share (source, symbol, granularity, window)")
        if not self.batch_id:
            object.__setattr__(self, "batch_id", short_hash(sorted(j.job_id for j in self.jobs)))

    @property
    def data_key(self) -> DataKey:
        """The shared (source, symbol, granularity, start, end)."""
        return self.jobs[0].data_key

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``curves`` appears only when off, so older readers see the messages they know)."""
        data: dict[str, Any] = {"batch_id": self.batch_id, "jobs": [j.to_dict() for j in self.jobs]}
        if not self.curves:
            data["curves"] = False
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Batch:
        """Inverse of :meth:`to_dict`."""
        curves = data.get("curves", True)
        if not isinstance(curves, bool):
            raise TypeError(f"batch 'curves' must be true or false, got {curves!r}")
        return cls(tuple(Job.from_dict(j) for j in data["jobs"]), curves=curves)


def make_batches(jobs: Iterable[Job], size: int, curves: bool = True) -> list[Batch]:
    """Group jobs by shared candles, then cut each group into batches of at most ``size`` jobs (stable order)."""
    if size < 1:
        raise ValueError("batch size must be >= 1")
    groups: dict[DataKey, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.data_key, []).append(job)
    batches: list[Batch] = []
    for group in groups.values():
        for i in range(0, len(group), size):
            batches.append(Batch(tuple(group[i : i + size]), curves=curves))
    return batches
