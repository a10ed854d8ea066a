"""One pipeline from a sweep spec to stored results, for both executors: ``run_sweep(spec, settings, store, executor)``.

Order matters for "nothing is stored for bad input": the spec is expanded and validated, and every window's candles
are loaded (which checks availability and gaps) before the sweep is recorded or any job runs. Then the sweep's
manifest is recorded, the store says which jobs it already has, and the executor runs only the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

from backfarm._util.time import iso
from backfarm.candles.load import load_candles
from backfarm.candles.memo import CandleMemo
from backfarm.candles.sources import get_source
from backfarm.config import Settings
from backfarm.core.results import SweepInfo, SweepRecord
from backfarm.errors import ConfigError
from backfarm.execution.executor import Executor, RunStats, SweepWork
from backfarm.results.store import ResultStore
from backfarm.sweeps.expand import Expansion, expand
from backfarm.sweeps.spec import SweepSpec


@dataclass
class SweepOutcome:
    """A finished (or interrupted, or detached) sweep run."""

    expansion: Expansion
    stats: RunStats
    reused: int
    """Jobs whose result was already stored before this run."""

    @property
    def sweep_id(self) -> str:
        """The sweep's id."""
        return self.expansion.sweep_id

    @property
    def total(self) -> int:
        """Jobs in the sweep."""
        return len(self.expansion.jobs)


def expand_spec(spec: SweepSpec, settings: Settings) -> Expansion:
    """The spec validated and expanded into jobs, symbols checked by its candle source (touches no store)."""
    source = get_source(spec.source, settings)
    return expand(spec, validate_symbol=source.validate_symbol)


def prepare_data(expansion: Expansion, settings: Settings, memo: CandleMemo | None = None) -> None:
    """Load every symbol's candles for the whole period: fetches what is missing, and fails early (with what is
    available) on windows outside the data or with too many gaps. Single-window sweeps seed ``memo``."""
    spec = expansion.spec
    source = get_source(spec.source, settings)
    start, end = expansion.windows[0][0], expansion.windows[-1][1]
    for symbol in dict.fromkeys(j.symbol for j in expansion.jobs):
        candles = load_candles(settings, source, symbol, spec.granularity, start, end)
        if memo is not None and len(expansion.windows) == 1:
            memo.put((spec.source, symbol, spec.granularity, iso(start), iso(end)), candles)


def sweep_record(expansion: Expansion, curves: bool = True) -> SweepRecord:
    """The manifest entry of a sweep: its spec with the exact period (and ``"curves": false`` when results keep no
    curves, so a re-enqueue builds the same kind of results; the sweep id does not depend on it), and every expected
    job id. :func:`rebuild_expansion` is its inverse."""
    spec = expansion.spec.to_dict()
    spec["period"] = [iso(expansion.windows[0][0]), iso(expansion.windows[-1][1])]
    if not curves:
        spec["curves"] = False
    job_ids = tuple(job.job_id for job in expansion.jobs)
    return SweepRecord(expansion.sweep_id, time.time(), spec, job_ids, expansion.spec.source)


def rebuild_expansion(info: SweepInfo) -> Expansion:
    """The jobs of a recorded sweep, regenerated from its stored spec (ids are deterministic, so they must match)."""
    known = {f.name for f in fields(SweepSpec)}
    data: dict[str, Any] = {k: v for k, v in info.spec.items() if k in known}
    for key in ("strategies", "symbols"):
        data[key] = tuple(data.get(key, ()))
    period = info.spec.get("period")
    if period:
        data.update(start=period[0], end=period[1], days=None)
    expansion = expand(SweepSpec(**data))
    if expansion.sweep_id != info.sweep_id:
        raise ConfigError(
            f"sweep {info.sweep_id} cannot be rebuilt here: its spec now expands to other jobs (a different backfarm "
            "or strategy plugin version?); run the same version as the one that submitted it"
        )
    return expansion


def run_sweep(
    spec: SweepSpec, settings: Settings, store: ResultStore, executor: Executor, curves: bool = True
) -> SweepOutcome:
    """Validate and expand ``spec``, prepare its data, record the sweep, and have ``executor`` run the jobs
    ``store`` does not have yet. ``curves``: results keep their equity curve and trades (not part of the sweep: the
    same jobs, stored leaner)."""
    expansion = expand_spec(spec, settings)
    prepare_data(expansion, settings, executor.memo)
    recorded = store.create_sweep(sweep_record(expansion, curves))
    existing = store.existing(job.job_id for job in expansion.jobs)
    work = SweepWork(
        sweep_id=expansion.sweep_id,
        todo=tuple(job for job in expansion.jobs if job.job_id not in existing),
        data_keys=tuple(sorted({job.data_key for job in expansion.jobs})),
        curves=curves,
        recorded=recorded,
    )
    stats = executor.run(work, store)
    return SweepOutcome(expansion, stats, reused=len(existing))
