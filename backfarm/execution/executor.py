"""The executor contract: what runs a sweep's missing jobs for :func:`backfarm.sweeps.run.run_sweep`.

Two implementations: :class:`~backfarm.execution.local.LocalExecutor` (a process pool on this machine, the embedded
default) and :class:`~backfarm.farm.client.FarmExecutor` (Celery workers on any number of machines). The pipeline
expands the spec, prepares the data, records the sweep and works out what is missing once; an executor only runs that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from backfarm.candles.memo import CandleMemo
from backfarm.core.jobs import DataKey, Job
from backfarm.results.store import ResultStore


@dataclass(frozen=True)
class SweepWork:
    """What the pipeline hands an executor."""

    sweep_id: str
    todo: tuple[Job, ...]
    """The sweep's jobs that have no stored result yet, in expansion order."""
    data_keys: tuple[DataKey, ...]
    """Every window of the sweep (source, symbol, granularity, start, end), sorted: what its candles are."""
    curves: bool
    """Store each result's equity curve and trades."""
    recorded: bool
    """True when this run recorded the sweep; False when it was recorded before (a rerun, or another submit)."""


@dataclass
class RunStats:
    """What an executor did."""

    computed: int = 0
    failed: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    workers: int = 0
    """Processes that ran jobs (local), or workers that answered (farm)."""


class Executor(Protocol):
    """Runs a sweep's missing jobs and commits their results (and failures) to the store."""

    memo: CandleMemo | None
    """Where the pipeline leaves the candles it loaded while checking the data (``None``: not needed here)."""

    def run(self, work: SweepWork, store: ResultStore) -> RunStats:
        """Run ``work.todo`` (or see to it that it runs) and return what happened."""
        ...
