"""The embedded executor: batches on a local process pool, results committed to the store as batches finish.

Each pool process keeps its own :class:`~backfarm.tasks.runner.CandleMemo`, so a window's candles and indicators are
loaded once per process. The parent warms the numba kernels up before forking, so children start hot. Only the
parent writes to the store (one transaction per finished batch): an interrupt loses at most the batches in flight,
and rerunning the same command computes only what is missing.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

from backfarm.config import Settings
from backfarm.leaderboard.store import ResultStore
from backfarm.sweeps.jobs import Batch
from backfarm.tasks.runner import BatchOutcome, CandleMemo, run_batch, warm_up

INLINE_MAX_JOBS = 64
"""Below this many jobs, forking a pool costs more than it saves: run in the calling process."""

Progress = Callable[[int, int], None]
"""Called with (jobs finished in this batch, jobs that failed in it)."""


@dataclass
class RunStats:
    """What the executor did."""

    computed: int = 0
    failed: int = 0
    seconds: float = 0.0
    interrupted: bool = False


_memo: CandleMemo | None = None


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def batch_size_for(jobs: int, groups: int, workers: int) -> int:
    """Jobs per batch: enough batches to keep every worker busy and balanced, few enough to amortise overhead."""
    per_group = max(1, jobs // max(groups, 1))
    target_batches = max(workers * 4, groups)
    size = max(1, (jobs + target_batches - 1) // target_batches)
    return max(8, min(size, 512, per_group))


def run_local(
    batches: Sequence[Batch],
    store: ResultStore,
    settings: Settings,
    sweep_id: str | None,
    workers: int,
    on_progress: Progress | None = None,
    memo: CandleMemo | None = None,
) -> RunStats:
    """Run ``batches`` and put their results into ``store``; failures are marked dead in ``sweep_id``."""
    stats = RunStats()
    started = time.perf_counter()
    jobs = sum(len(b.jobs) for b in batches)
    try:
        if workers <= 1 or jobs <= INLINE_MAX_JOBS or len(batches) == 1:
            _run_inline(batches, store, settings, sweep_id, stats, on_progress, memo)
        else:
            _run_pool(batches, store, settings, sweep_id, workers, stats, on_progress)
    except KeyboardInterrupt:
        stats.interrupted = True
    stats.seconds = time.perf_counter() - started
    return stats


def _commit(
    outcome: BatchOutcome, store: ResultStore, sweep_id: str | None, stats: RunStats, on_progress: Progress | None
) -> None:
    if outcome.results:
        store.put(outcome.results)
    if sweep_id:
        for job_id, reason in outcome.failed.items():
            store.mark_dead(sweep_id, job_id, reason)
    stats.computed += len(outcome.results)
    stats.failed += len(outcome.failed)
    if on_progress:
        on_progress(len(outcome.results) + len(outcome.failed), len(outcome.failed))


def _run_inline(
    batches: Sequence[Batch],
    store: ResultStore,
    settings: Settings,
    sweep_id: str | None,
    stats: RunStats,
    on_progress: Progress | None,
    memo: CandleMemo | None,
) -> None:
    memo = memo or CandleMemo(settings)
    for batch in batches:
        _commit(run_batch(batch, memo), store, sweep_id, stats, on_progress)


def _init_child(settings: Settings) -> None:
    # The parent handles Ctrl-C; children must not die mid-write with a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _memo
    _memo = CandleMemo(settings)


def _child_run(batch: dict[str, object]) -> BatchOutcome:
    assert _memo is not None
    return run_batch(Batch.from_dict(batch), _memo)


def _run_pool(
    batches: Sequence[Batch],
    store: ResultStore,
    settings: Settings,
    sweep_id: str | None,
    workers: int,
    stats: RunStats,
    on_progress: Progress | None,
) -> None:
    warm_up()  # children forked after this inherit loaded kernels
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_child, initargs=(settings,))
    pending: set[Future[BatchOutcome]] = set()
    queue = list(batches)
    try:
        # Keep a bounded number of batches in flight so an interrupt cancels cleanly and memory stays flat.
        while queue or pending:
            while queue and len(pending) < workers * 2:
                pending.add(pool.submit(_child_run, queue.pop(0).to_dict()))
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                _commit(future.result(), store, sweep_id, stats, on_progress)
    except BaseException:
        for future in pending:
            future.cancel()
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
