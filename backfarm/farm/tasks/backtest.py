"""The batch task: run one batch of backtests on a worker and commit its results exactly once.

Celery on Redis delivers at least once, so every step is safe to repeat (DESIGN §7, reliability.md §3.3):

1. **Done guard.** Jobs that already have a result (from this sweep or any earlier one) are skipped.
2. **Attempt counting**, keyed on the stable (sweep, job id). A batch seen for the first time runs in bulk: every
   job's counter goes to 1 in one round trip and the whole batch commits in one atomic ``put``. A batch whose jobs
   were attempted before was interrupted (its worker died, hit the time limit, or lost Redis), so it runs *careful*:
   one job at a time, each counted just before it runs and committed just after. One job that kills its process
   therefore costs the other jobs of its batch one extra run at most, and only it reaches the cap.
3. **Cap.** A job counted past ``max_attempts`` is marked dead with the reason instead of run again; a job whose
   strategy raised is retried (only the failing jobs travel in the retry) and marked dead with the error once it has
   failed ``max_attempts`` times.
4. **Atomic commit.** Result, leaderboard entries and done mark are one Lua step (:meth:`RedisStore.put`), so a
   re-run changes nothing and a crash never leaves half a result.

Temporary failures (Redis unreachable, rate limits) are retried with backoff; a malformed message is logged and
dropped without running anything.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from celery import Celery, Task
from celery.exceptions import Reject

from backfarm.core.jobs import Batch, Job
from backfarm.errors import ConfigError, DataError, RedisRefusesWrites, RedisUnreachable, TemporaryError
from backfarm.execution.runner import BatchOutcome, run_batch
from backfarm.farm import lifecycle
from backfarm.farm.fetch import ensure_window
from backfarm.farm.lifecycle import WorkerContext
from backfarm.farm.presence import Presence, missing_reason
from backfarm.farm.tasks.retry import PUBLISH_ERRORS, backoff, retry_later
from backfarm.strategies.registry import base_identity, copy_differs

log = logging.getLogger(__name__)

BATCH_TASK = "backfarm.backtest.batch"
"""The task's explicit name (queued messages name it; renaming a module never strands them)."""

TEMPORARY_RETRIES = 12
"""Retries of a batch that keeps hitting temporary errors before Celery gives up (reconcile re-enqueues it)."""
FAILURE_RETRY_S = 1.0
"""Delay before failing jobs are retried (they usually fail again; the cap keeps this bounded)."""
HAND_BACK_PAUSE_S = 1.0
"""How long a worker without a batch's strategy code waits before handing the batch back (:func:`_hand_over`)."""


@dataclass
class BatchReport:
    """What one delivery of a batch did (logged by Celery as the task's return value)."""

    jobs: int = 0
    skipped: int = 0
    computed: int = 0
    dead: int = 0
    mode: str = "bulk"
    retry: list[Job] = field(default_factory=list)
    cancelled: bool = False

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "jobs": self.jobs,
            "skipped": self.skipped,
            "computed": self.computed,
            "dead": self.dead,
            "retrying": len(self.retry),
            "mode": self.mode,
            "cancelled": self.cancelled,
        }


def register(app: Celery) -> Task:
    """Register the batch task on ``app`` under its explicit name."""
    return app.task(name=BATCH_TASK, bind=True, max_retries=None)(batch_task)


def batch_task(self: Task, sweep_id: str, batch: dict[str, Any]) -> dict[str, Any]:
    """Celery entry point: decode, process, and retry what needs retrying."""
    try:
        decoded = Batch.from_dict(batch)
    except (KeyError, TypeError, ValueError) as exc:
        log.error("dropping a malformed batch message for sweep %s: %s: %s", sweep_id, type(exc).__name__, exc)
        return {"malformed": True}
    back: list[Job] = []
    try:
        ctx = lifecycle.context(self.app.backfarm_settings)
        runnable, foreign = split_by_code(decoded.jobs)
        if foreign:
            back = ride_out(
                lambda: hand_back(ctx, sweep_id, foreign, self.request.hostname), ctx.settings.redis_outage_s
            )
        work = Batch(tuple(runnable), curves=decoded.curves) if runnable else None
        report = (
            ride_out(lambda: process_batch(ctx, sweep_id, work), ctx.settings.redis_outage_s) if work else BatchReport()
        )
        _announce(ctx, sweep_id, report, self.request.hostname)
    except TemporaryError as exc:
        countdown = backoff(self.request.retries)
        log.warning("batch %s of sweep %s: %s; retrying in %.0f s", decoded.batch_id, sweep_id, exc, countdown)
        retry_later(self, exc, TEMPORARY_RETRIES)
    if back:
        _hand_over(self, sweep_id, Batch(tuple(back), curves=decoded.curves))
    if report.retry:
        rest = Batch(tuple(report.retry), curves=decoded.curves).to_dict()
        raise self.retry(args=(sweep_id, rest), countdown=FAILURE_RETRY_S, max_retries=None)
    return report.summary()


def _hand_over(task: Task, sweep_id: str, batch: Batch) -> None:
    """Put ``batch`` back at the end of the queue for a worker that has its strategy code, after a pause.

    A fresh message, not a Celery retry: a retry carries an ETA, and a worker holds ETA messages it receives beyond
    its prefetch limit, so the worker without the code would keep taking its own hand-backs. The pause keeps it from
    spinning on them while the workers with the code are busy. Publishing before this message is acknowledged means
    a crash in between leaves two copies, which is safe (the done guard), never none."""
    time.sleep(HAND_BACK_PAUSE_S)
    try:
        task.apply_async(args=(sweep_id, batch.to_dict()))
    except PUBLISH_ERRORS as failed:
        raise Reject(f"could not hand the batch back ({failed}); returning the message", requeue=True) from None


def split_by_code(jobs: Sequence[Job]) -> tuple[list[Job], list[Job]]:
    """The jobs this worker's strategies can run, and those whose strategy it lacks or has other code for."""
    runnable: list[Job] = []
    foreign: list[Job] = []
    for job in jobs:
        (runnable if copy_differs(job.strategy, job.strategy_version) is None else foreign).append(job)
    return runnable, foreign


def hand_back(ctx: WorkerContext, sweep_id: str, jobs: Sequence[Job], worker: str | None) -> list[Job]:
    """Of jobs this worker cannot run: those some other live worker can, to hand back (not counted as attempts);
    the rest are marked dead naming every live worker's copy. Done jobs and cancelled sweeps are left alone."""
    ids = [job.job_id for job in jobs]
    cancelled, _ = ctx.ledger.prior(sweep_id, ids)
    done = ctx.store.existing(ids)
    todo = [job for job in jobs if job.job_id not in done]
    if cancelled or not todo:
        return []
    live = Presence(ctx.conn).live()
    back: list[Job] = []
    for job in todo:
        wanted = base_identity(job.strategy_version)
        if any(have.get(job.strategy) == wanted for name, have in live.items() if name != worker):
            back.append(job)
        else:
            reason = missing_reason(job.strategy, wanted, live)
            ctx.store.mark_dead(sweep_id, job.job_id, reason)
            log.error("sweep %s job %s is dead: %s", sweep_id, job.job_id, reason)
    if back:
        log.warning(
            "handing %d jobs of sweep %s back: this worker lacks their strategy code (%s)",
            len(back), sweep_id, ", ".join(sorted({f"{j.strategy} {j.strategy_version}" for j in back})),
        )  # fmt: skip
    return back


T = TypeVar("T")
RIDE_OUT_MAX_WAIT_S = 15.0


def ride_out(
    work: Callable[[], T],
    limit_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``work()``, done again while Redis is unreachable or refuses writes, for up to ``limit_s`` seconds.

    A batch is idempotent (done jobs are skipped, a commit is all or nothing), so trying it again in place once Redis
    is back is safe, and better than handing it to a Celery retry that cannot be published while Redis is away.
    Waits 1, 2, 4 … 15 s in between, with one warning each (not one line per failed command)."""
    started, delay = clock(), 1.0
    while True:
        try:
            return work()
        except (RedisUnreachable, RedisRefusesWrites) as exc:
            if clock() - started + delay > limit_s:
                raise
            log.warning("%s; trying the batch again in %.0f s", exc, delay)
            sleep(delay)
            delay = min(2.0 * delay, RIDE_OUT_MAX_WAIT_S)


def _announce(ctx: WorkerContext, sweep_id: str, report: BatchReport, worker: str | None) -> None:
    """Tell clients waiting on the sweep that it moved, and which worker moved it (a hint: they also poll, so a lost
    message costs nothing)."""
    if report.computed or report.dead:
        message = json.dumps({"worker": worker or socket.gethostname(), "jobs": report.computed + report.dead})
        try:
            ctx.ledger.announce(sweep_id, message)
        except (TemporaryError, redis.RedisError) as exc:
            log.debug("could not announce progress of sweep %s: %s", sweep_id, exc)


def process_batch(ctx: WorkerContext, sweep_id: str, batch: Batch) -> BatchReport:
    """Skip what is done, count attempts, run the rest (bulk or careful), commit, and decide about failures."""
    ids = [job.job_id for job in batch.jobs]
    report = BatchReport(jobs=len(ids))
    cancelled, prior = ctx.ledger.prior(sweep_id, ids)
    if cancelled:
        report.cancelled = True
        return report
    done = ctx.store.existing(ids)
    todo = [(job, n) for job, n in zip(batch.jobs, prior, strict=True) if job.job_id not in done]
    report.skipped = len(ids) - len(todo)
    if not todo:
        log.info("batch %s of sweep %s: all %d jobs done already", batch.batch_id, sweep_id, len(ids))
        return report
    if all(n == 0 for _, n in todo):
        _run_bulk(ctx, sweep_id, [job for job, _ in todo], report, batch.curves)
    else:
        report.mode = "careful"
        _run_careful(ctx, sweep_id, [job for job, _ in todo], report, batch.curves)
    return report


def _run_bulk(ctx: WorkerContext, sweep_id: str, jobs: Sequence[Job], report: BatchReport, curves: bool) -> None:
    """First delivery: count every job once, run them together, commit them in one step."""
    ids = [job.job_id for job in jobs]
    counts = dict(zip(ids, ctx.ledger.attempt_many(sweep_id, ids), strict=True))
    outcome = _run(ctx, Batch(tuple(jobs), curves=curves))
    if outcome.results:
        ctx.store.put(outcome.results)
    report.computed += len(outcome.results)
    _failures(ctx, sweep_id, jobs, outcome.failed, counts, report)


def _run_careful(ctx: WorkerContext, sweep_id: str, jobs: Sequence[Job], report: BatchReport, curves: bool) -> None:
    """Redelivery: one job at a time, counted right before it runs and committed right after."""
    cap = ctx.settings.max_attempts
    for job in jobs:
        if ctx.store.existing([job.job_id]):  # a duplicate delivery may have finished it meanwhile
            report.skipped += 1
            continue
        count = ctx.ledger.attempt(sweep_id, job.job_id)
        if count > cap:
            reason = (
                f"gave up after {cap} attempts: the worker process died, was killed or hit the time limit "
                f"while running this job (last seen by {socket.gethostname()})"
            )
            ctx.store.mark_dead(sweep_id, job.job_id, reason)
            report.dead += 1
            log.error("sweep %s job %s is dead: %s", sweep_id, job.job_id, reason)
            continue
        outcome = _run(ctx, Batch((job,), curves=curves))
        if outcome.results:
            ctx.store.put(outcome.results)
        report.computed += len(outcome.results)
        _failures(ctx, sweep_id, [job], outcome.failed, {job.job_id: count}, report)


def _run(ctx: WorkerContext, batch: Batch) -> BatchOutcome:
    """run_batch, with data and configuration problems turned into per-job failures (they count like crashes)."""
    try:
        ensure_window(ctx, batch.data_key)
        return run_batch(batch, ctx.memo)
    except (ConfigError, DataError) as exc:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        return BatchOutcome(failed={job.job_id: reason for job in batch.jobs})


def _failures(
    ctx: WorkerContext,
    sweep_id: str,
    jobs: Sequence[Job],
    failed: dict[str, str],
    counts: dict[str, int],
    report: BatchReport,
) -> None:
    """Failed jobs below the cap are retried; at the cap they are marked dead with their error."""
    cap = ctx.settings.max_attempts
    for job in jobs:
        reason = failed.get(job.job_id)
        if reason is None:
            continue
        count = counts[job.job_id]
        if count >= cap:
            ctx.store.mark_dead(sweep_id, job.job_id, f"failed {count} times: {reason}")
            report.dead += 1
            log.error("sweep %s job %s is dead after %d failures: %s", sweep_id, job.job_id, count, reason)
        else:
            report.retry.append(job)
