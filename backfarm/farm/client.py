"""The farm from the client's side: submit a sweep's missing jobs, watch it finish, repair it, cancel it.

Progress and completeness come from the store's sets (manifest, done, dead), never from Celery results: a sweep is
complete when every expected job is done or dead. Because Celery on Redis can, rarely, lose a message,
:meth:`FarmClient.reconcile` re-enqueues whatever is expected but neither done nor dead, and :meth:`FarmClient.wait`
does so by itself when the sweep stops moving while nothing is queued. Re-enqueuing is always safe: the tasks skip
done jobs and commit idempotently. :class:`FarmExecutor` is the executor of :func:`backfarm.sweeps.run.run_sweep`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from celery import Celery

from backfarm._util.connection import refusal, refused_writes
from backfarm._util.outage import Outage
from backfarm._util.time import parse_iso
from backfarm.candles.memo import CandleMemo
from backfarm.config import Settings
from backfarm.core.candles import granularity_seconds
from backfarm.core.jobs import Batch, DataKey, Job, make_batches
from backfarm.core.results import SweepInfo
from backfarm.errors import ConfigError, RedisRefusesWrites, ServiceUnavailable, TemporaryError, ValidationError
from backfarm.execution.executor import RunStats, SweepWork
from backfarm.farm.app import close_app, create_app
from backfarm.farm.fetch import REMOTE_SOURCES
from backfarm.farm.keys import BACKTEST_QUEUE, DATA_QUEUE, UNACKED
from backfarm.farm.ledger import Ledger
from backfarm.farm.tasks.backtest import BATCH_TASK
from backfarm.farm.tasks.data import FETCH_TASK
from backfarm.farm.tasks.paper import enqueue_session
from backfarm.farm.watch import Pinger, Progress, RateWindow, Wakeups, known_workers
from backfarm.paper.spec import SessionSpec
from backfarm.results.redis_store import RedisStore
from backfarm.results.store import ResultStore
from backfarm.sweeps.run import rebuild_expansion

log = logging.getLogger(__name__)

TARGET_BATCH_BAR_STEPS = 4_000_000
"""Bars × jobs per batch (92 jobs of 43,200 bars). A bar-step costs ~35 ns on the reference machine and a task ~8 ms
in messaging (ack, fetch, hand-off to the pool process), so ~0.15 s of work per task keeps that overhead near 5 %,
while results reach the store in smaller, steadier commits (92-job batches measured 1,817/s vs 1,626/s for 46)."""
MIN_BATCH, MAX_BATCH = 4, 512
MIN_BATCHES = 8
PUBLISH_CHUNK = 500
"""Messages per pipelined publish round trip."""
RESUBMIT_GRACE_S = 60.0
"""A sweep recorded longer ago than this, unfinished, with nothing queued or running, is re-enqueued on resubmit
(younger ones may still be being published by the submit that recorded them)."""
LOST_WORKER_STALL_S = 15.0
"""Seconds without progress, once a worker has vanished, before the missing jobs are re-enqueued."""

Updated = Callable[[Progress], None]


def farm_batch_size(jobs: Sequence[Job]) -> int:
    """Jobs per task: enough work per message that messaging overhead stays small (``TARGET_BATCH_BAR_STEPS``),
    and at least ``MIN_BATCHES`` tasks so a small sweep still spreads over several workers."""
    if not jobs:
        return MIN_BATCH
    job = jobs[0]
    seconds = (parse_iso(job.end) - parse_iso(job.start)).total_seconds()
    bars = max(1.0, seconds / granularity_seconds(job.granularity))
    by_work = TARGET_BATCH_BAR_STEPS // bars
    by_spread = -(-len(jobs) // MIN_BATCHES)
    return int(min(MAX_BATCH, max(MIN_BATCH, min(by_work, by_spread))))


def enqueue_paper(settings: Settings, spec: SessionSpec) -> None:
    """Hand a stored paper session to the farm's paper workers (an app made and closed for the one message)."""
    app = create_app(settings)
    try:
        enqueue_session(app, spec)
    finally:
        close_app(app)


def live_workers(app: Celery, timeout: float = 0.5) -> list[str]:
    """Names of the workers that answer a ping within ``timeout`` seconds."""
    try:
        with app.connection_for_write() as conn:  # short-lived, like _publish
            replies = app.control.ping(timeout=timeout, connection=conn) or []
    except Exception as exc:  # a broker hiccup must not end a wait
        log.debug("worker ping failed: %s", exc)
        return []
    return sorted(name for reply in replies for name in reply)


class FarmClient:
    """A client of the farm: one result store (Redis), the farm's ledger on the same connection, a Celery app.

    The app is made (and closed) here unless one is given. Opens no connection of its own beyond the store's.
    """

    def __init__(self, settings: Settings, store: RedisStore, app: Celery | None = None) -> None:
        self.settings = settings
        self.store = store
        self.ledger = Ledger(store.conn, store.keys.prefix)
        self._owns_app = app is None
        self.app = create_app(settings) if app is None else app

    def close(self) -> None:
        """Close the Celery app, if this client made it."""
        if self._owns_app:
            close_app(self.app)

    def __enter__(self) -> FarmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- submitting -----------------------------------------------------------------------------------------------

    def submit(self, work: SweepWork) -> None:
        """Enqueue the sweep's missing jobs in batches (and, for a remote source, its candle fetches first).

        A sweep that was already recorded (submitted before, or right now from another shell) is not enqueued again:
        the manifest gate makes a double submit harmless. An older one that is unfinished while nothing at all is
        queued or running (its submit died before publishing, or Redis lost the messages) is reconciled right away;
        otherwise :meth:`wait` reconciles it if it stalls.
        """
        if not work.recorded:
            info = self._sweep(work.sweep_id)
            lengths = self.ledger.queue_lengths()
            idle = lengths[BACKTEST_QUEUE] == 0 and lengths[UNACKED] == 0
            if not info.complete and idle and time.time() - info.created_at > RESUBMIT_GRACE_S:
                log.warning(
                    "sweep %s was recorded but nothing of it is queued: re-enqueuing what is missing", info.sweep_id
                )
                self.reconcile(info.sweep_id)
            return
        if not work.todo:
            return
        remote = [key for key in work.data_keys if key[0] in REMOTE_SOURCES]
        if remote:
            self.enqueue_fetches(remote)
        self.enqueue(work.sweep_id, make_batches(work.todo, farm_batch_size(work.todo), work.curves))

    def enqueue(self, sweep_id: str, batches: Sequence[Batch]) -> int:
        """Publish one task per batch, pipelined (one Redis round trip per ``PUBLISH_CHUNK`` messages)."""
        if not batches:
            return 0
        try:
            self._publish(
                [(BATCH_TASK, [sweep_id, batch.to_dict()], BACKTEST_QUEUE) for batch in batches],
                [f"['{sweep_id}', <batch {batch.batch_id}: {len(batch.jobs)} jobs>]" for batch in batches],
            )
        except Exception as exc:  # kombu/redis raise many types; the sweep is re-runnable, say so
            if isinstance(exc, (ConfigError, ValidationError)):
                raise
            code = refusal(exc) if isinstance(exc, Exception) else None
            if code is not None:
                refused = refused_writes(self.store.conn.safe_url, f"{code} {exc}")
                raise RedisRefusesWrites(
                    f"could not enqueue sweep {sweep_id}: {refused}; then run `backfarm sweep reconcile {sweep_id}`"
                ) from None
            raise ServiceUnavailable(
                f"could not enqueue sweep {sweep_id} ({type(exc).__name__}: {exc}); "
                f"run `backfarm sweep reconcile {sweep_id}` once Redis is back"
            ) from None
        return len(batches)

    def enqueue_fetches(self, data_keys: Sequence[DataKey]) -> int:
        """One ``data`` task per window, so candles are fetched ahead of the batches that need them."""
        self._publish([(FETCH_TASK, list(key), DATA_QUEUE) for key in data_keys])
        return len(data_keys)

    def _publish(self, messages: Sequence[tuple[str, list[Any], str]], summaries: Sequence[str] | None = None) -> None:
        """Send (task name, args, queue) messages through one short-lived connection, in pipelined chunks.

        ``summaries`` are what Flower and the logs show as each task's arguments (Celery would otherwise build a
        truncated repr of a whole batch, which costs more than sending it).

        Not kombu's process-wide connection pool: a pooled connection outlives this call, and a process that forks
        later (the embedded executor) would inherit its socket.
        """
        with self.app.connection_for_write() as conn:
            producer = conn.Producer()
            with producer.batch(max_size=PUBLISH_CHUNK):
                for i, (name, args, queue) in enumerate(messages):
                    shown = {"argsrepr": summaries[i], "kwargsrepr": "{}"} if summaries else {}
                    self.app.send_task(name, args=args, queue=queue, producer=producer, **shown)

    # --- repairing and cancelling ---------------------------------------------------------------------------------

    def reconcile(self, sweep_id: str) -> int:
        """Re-enqueue every job of the sweep that is expected but neither done nor dead; returns how many."""
        info = self._sweep(sweep_id)
        pending = set(self.store.pending(info.sweep_id))
        if not pending:
            return 0
        jobs = [job for job in rebuild_expansion(info).jobs if job.job_id in pending]
        curves = info.spec.get("curves", True) is not False  # as submitted (the manifest says so only when off)
        self.enqueue(info.sweep_id, make_batches(jobs, farm_batch_size(jobs), curves))
        return len(jobs)

    def cancel(self, sweep_id: str) -> int | None:
        """Stop a sweep: queued batches of it are skipped and its unfinished jobs marked dead; returns how many, or
        ``None`` for a sweep that is already complete (it keeps its state: there is nothing to cancel)."""
        info = self._sweep(sweep_id)
        if info.complete:
            return None
        reason = f"cancelled at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"
        self.ledger.cancel(info.sweep_id, reason)
        pending = self.store.pending(info.sweep_id)
        if pending:
            self.store.mark_dead(info.sweep_id, pending, reason)
        return len(pending)

    # --- watching -------------------------------------------------------------------------------------------------

    def progress(self, sweep_id: str) -> Progress:
        """The sweep's progress from the store's sets."""
        info = self._sweep(sweep_id)
        cancelled = self.ledger.is_cancelled(info.sweep_id)
        return Progress(info.sweep_id, info.total, info.done, info.dead, cancelled=cancelled)

    def wait(
        self,
        sweep_id: str,
        on_update: Updated | None = None,
        poll_s: float = 0.2,
        stall_s: float | None = None,
        timeout_s: float | None = None,
        lost_stall_s: float = LOST_WORKER_STALL_S,
    ) -> Progress:
        """Poll until the sweep is complete or cancelled (or ``timeout_s`` passes); returns the last progress.

        When nothing finished for ``stall_s`` (default: the visibility timeout plus two restore sweeps) while the
        backtest queue is empty, messages were lost: the pending jobs are reconciled (re-enqueued) automatically.
        When a worker that answered pings misses two in a row, the wait before reconciling shrinks to
        ``lost_stall_s``. Workers are pinged in the background, so a slow ping never delays the progress shown.
        """
        if stall_s is None:
            stall_s = self.settings.visibility_timeout_s + 2 * self.settings.restore_interval_s + 5
        started = last_move = time.monotonic()
        window = RateWindow()
        first = self.progress(sweep_id)
        baseline = first.done + first.dead
        reconciled = 0
        shown = first  # what an outage shows meanwhile: the last progress seen
        outage = Outage(self.settings.redis_outage_s)
        with Pinger(lambda: live_workers(self.app)) as pinger, Wakeups(self.ledger, first.sweep_id) as wakeups:
            while True:
                now = time.monotonic()
                # A worker that answered before and no longer does took its unacked batch with it: no need to wait
                # out the visibility timeout before re-enqueueing (a duplicate run is harmless, commits are atomic).
                lost = bool(pinger.missing)
                try:
                    current = self.progress(sweep_id)
                    current.queued = self.ledger.queue_lengths()[BACKTEST_QUEUE]
                except TemporaryError:
                    # Redis restarting or out of reach: the workers ride it out, so does the wait (up to a limit).
                    down = outage.failed()
                    if down is None:
                        raise
                    if on_update is not None:
                        on_update(dataclasses.replace(shown, elapsed_s=now - started, unreachable_s=down))
                    time.sleep(min(1.0, poll_s * 5))
                    continue
                if (was_down := outage.answered()) is not None:
                    log.warning("Redis answers again after %.0f s", was_down)
                finished = current.done + current.dead
                if window.samples and finished != window.samples[-1][1]:
                    last_move = now
                current.rate = window.add(now, finished)
                current.workers, current.elapsed_s = known_workers(pinger.workers, wakeups.workers), now - started
                current.finished_here, current.reconciled = finished - baseline, reconciled
                shown = current
                if on_update is not None:
                    on_update(current)
                if current.complete or current.cancelled or (timeout_s is not None and now - started >= timeout_s):
                    break
                limit = min(stall_s, lost_stall_s) if lost else stall_s
                if now - last_move >= limit and current.queued == 0:
                    count = self.reconcile(current.sweep_id)
                    log.warning("sweep %s made no progress for %.0f s with nothing queued: re-enqueued %d jobs",
                                current.sweep_id, now - last_move, count)  # fmt: skip
                    reconciled += count
                    last_move = now
                wakeups.wait(poll_s)
        # The first ping may not have come back yet (it is not waited for): the workers that reported batches count.
        current.workers = known_workers(pinger.workers, wakeups.workers)
        return current

    def _sweep(self, sweep_id: str) -> SweepInfo:
        info = self.store.sweep(sweep_id)
        if info is None:
            raise ValidationError(f"unknown sweep '{sweep_id}' (see `backfarm sweeps`)")
        return info


class FarmExecutor:
    """The farm as :func:`~backfarm.sweeps.run.run_sweep`'s executor: submit the missing jobs, then wait for them
    (unless ``detach``) with ``on_update`` called on every poll. An interrupt while waiting leaves the sweep running
    on the farm (``stats.interrupted``)."""

    memo: CandleMemo | None = None
    """The client only checks the data; workers load candles themselves."""

    def __init__(
        self,
        settings: Settings,
        detach: bool = False,
        on_update: Updated | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.detach = detach
        self.on_update = on_update
        self.timeout_s = timeout_s
        """Stop waiting after this long (the sweep carries on): for callers that must not wait forever."""

    def run(self, work: SweepWork, store: ResultStore) -> RunStats:
        """Submit, then wait (unless detached) and report what the farm did."""
        if not isinstance(store, RedisStore):
            raise ConfigError("the farm needs its Redis result store: set BACKFARM_REDIS_URL or pass --redis URL")
        stats = RunStats()
        with FarmClient(self.settings, store) as farm:
            farm.submit(work)
            if self.detach:
                return stats
            started = time.perf_counter()
            last: list[Progress] = []

            def update(p: Progress) -> None:
                last[:] = [p]
                if self.on_update is not None:
                    self.on_update(p)

            try:
                final = farm.wait(work.sweep_id, on_update=update, timeout_s=self.timeout_s)
            except KeyboardInterrupt:
                stats.interrupted = True
                final = last[0] if last else farm.progress(work.sweep_id)
        stats.seconds = final.elapsed_s if final.complete else time.perf_counter() - started
        stats.computed = max(0, final.done - (final.total - len(work.todo)))
        stats.failed = final.dead
        stats.workers = len(final.workers or [])
        return stats
