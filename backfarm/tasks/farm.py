"""The farm from the client's side: submit a sweep, watch it finish, repair it, cancel it.

Progress and completeness come from the store's sets (manifest, done, dead), never from Celery results: a sweep is
complete when every expected job is done or dead. Because Celery on Redis can, rarely, lose a message,
:func:`reconcile` re-enqueues whatever is expected but neither done nor dead, and :func:`wait` does so by itself when
the sweep stops moving while nothing is queued. Re-enqueuing is always safe: the tasks skip done jobs and commit
idempotently.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis

from backfarm.errors import ConfigError, ServiceUnavailable, ValidationError
from backfarm.leaderboard.model import SweepInfo
from backfarm.sweeps.jobs import Batch, Job, make_batches
from backfarm.sweeps.spec import Expansion, SweepSpec, expand
from backfarm.tasks.backtest import FarmKeys, redis_errors
from backfarm.tasks.sweep import sweep_record
from backfarm.workers.app import BACKTEST_QUEUE, BATCH_TASK, DATA_QUEUE, FETCH_TASK, QUEUES, close_app, create_app

if TYPE_CHECKING:
    from celery import Celery

    from backfarm.config import Settings
    from backfarm.leaderboard.redis_store import RedisStore

log = logging.getLogger(__name__)

TARGET_BATCH_BAR_STEPS = 4_000_000
"""Bars × jobs per batch (92 jobs of 43,200 bars). A bar-step costs ~35 ns on the reference machine and a task ~8 ms
in messaging (ack, fetch, hand-off to the pool process), so ~0.15 s of work per task keeps that overhead near 5 %,
while results reach the store in smaller, steadier commits (92-job batches measured 1,817/s vs 1,626/s for 46)."""
MIN_BATCH, MAX_BATCH = 4, 512
MIN_BATCHES = 8
PUBLISH_CHUNK = 500
"""Messages per pipelined publish round trip."""
PING_TIMEOUT_S = 0.5
RESUBMIT_GRACE_S = 60.0
"""A sweep recorded longer ago than this, unfinished, with nothing queued or running, is re-enqueued on resubmit
(younger ones may still be being published by the submit that recorded them)."""
PING_EVERY_S = 5.0

Updated = Callable[["Progress"], None]


@dataclass
class Progress:
    """A sweep's progress as the farm sees it."""

    sweep_id: str
    total: int
    done: int
    dead: int
    elapsed_s: float = 0.0
    rate: float = 0.0
    """Jobs finished per second, over the last few polls."""
    workers: list[str] | None = None
    """Names of the workers that answered the last ping (``None`` before the first ping)."""
    queued: int = 0
    """Messages waiting in the backtest queue."""
    cancelled: bool = False
    reconciled: int = 0
    """Jobs re-enqueued by this wait because the sweep had stalled."""
    finished_here: int = 0
    """Jobs done or dead since this wait started."""

    @property
    def pending(self) -> int:
        """Jobs neither done nor dead."""
        return max(0, self.total - self.done - self.dead)

    @property
    def complete(self) -> bool:
        """Every expected job is done or dead."""
        return self.pending == 0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate (``None`` when nothing is moving)."""
        return self.pending / self.rate if self.rate > 0 else None


@dataclass
class _RateWindow:
    """Finished-job counts over the last ``span_s`` seconds."""

    span_s: float = 10.0
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, finished: int) -> float:
        self.samples.append((now, finished))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.span_s:
            self.samples.popleft()
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


# --- building blocks ---------------------------------------------------------------------------------------------


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


def farm_batch_size(jobs: Sequence[Job]) -> int:
    """Jobs per task: enough work per message that messaging overhead stays small (``TARGET_BATCH_BAR_STEPS``),
    and at least ``MIN_BATCHES`` tasks so a small sweep still spreads over several workers."""
    if not jobs:
        return MIN_BATCH
    from backfarm.candles.schema import granularity_seconds
    from backfarm.sweeps.jobs import parse_iso

    job = jobs[0]
    seconds = (parse_iso(job.end) - parse_iso(job.start)).total_seconds()
    bars = max(1.0, seconds / granularity_seconds(job.granularity))
    by_work = TARGET_BATCH_BAR_STEPS // bars
    by_spread = -(-len(jobs) // MIN_BATCHES)
    return int(min(MAX_BATCH, max(MIN_BATCH, min(by_work, by_spread))))


def enqueue(app: Celery, sweep_id: str, batches: Sequence[Batch]) -> int:
    """Publish one task per batch, pipelined (one Redis round trip per ``PUBLISH_CHUNK`` messages)."""
    if not batches:
        return 0
    try:
        _publish(
            app,
            [(BATCH_TASK, [sweep_id, batch.to_dict()], BACKTEST_QUEUE) for batch in batches],
            [f"['{sweep_id}', <batch {batch.batch_id}: {len(batch.jobs)} jobs>]" for batch in batches],
        )
    except Exception as exc:  # kombu/redis raise many types; the sweep is re-runnable, say so
        if isinstance(exc, (ConfigError, ValidationError)):
            raise
        raise ServiceUnavailable(
            f"could not enqueue sweep {sweep_id} ({type(exc).__name__}: {exc}); "
            f"run `backfarm sweep reconcile {sweep_id}` once Redis is back"
        ) from None
    return len(batches)


def enqueue_fetches(app: Celery, expansion: Expansion) -> int:
    """For a remote source, one ``data`` task per symbol and window, so candles are fetched ahead of the batches."""
    keys = sorted({job.data_key for job in expansion.jobs})
    _publish(app, [(FETCH_TASK, list(key), DATA_QUEUE) for key in keys])
    return len(keys)


def _publish(
    app: Celery, messages: Sequence[tuple[str, list[Any], str]], summaries: Sequence[str] | None = None
) -> None:
    """Send (task name, args, queue) messages through one short-lived connection, in pipelined chunks.

    ``summaries`` are what Flower and the logs show as each task's arguments (Celery would otherwise build a
    truncated repr of a whole batch, which costs more than sending it).

    Not kombu's process-wide connection pool: a pooled connection outlives this call, and a process that forks
    later (the embedded executor) would inherit its socket.
    """
    with app.connection_for_write() as conn:
        producer = conn.Producer()
        with producer.batch(max_size=PUBLISH_CHUNK):
            for i, (name, args, queue) in enumerate(messages):
                shown = {"argsrepr": summaries[i], "kwargsrepr": "{}"} if summaries else {}
                app.send_task(name, args=args, queue=queue, producer=producer, **shown)


# --- the client API ----------------------------------------------------------------------------------------------


def preflight(settings: Settings, timeout_s: float = 3.0) -> None:
    """One quick PING: an unreachable Redis is a ConfigError, rejected credentials an AuthError (never the password).

    Runs before anything is validated against or written to the farm, so a wrong URL fails in seconds, not after
    redis-py's and Celery's retries.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from backfarm.config import redact_url
    from backfarm.errors import AuthError
    from backfarm.workers.app import require_redis_url

    url = require_redis_url(settings)
    safe = redact_url(url)
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL {safe}: {exc}") from None
    password = client.connection_pool.connection_kwargs.get("password")

    def scrub(exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        return text.replace(password, "***") if password else text

    try:
        client.ping()
    except (redis.AuthenticationError, redis.ResponseError) as exc:
        no_auth = isinstance(exc, redis.AuthenticationError) or str(exc).startswith("NOAUTH")
        if no_auth and not password:
            raise AuthError(
                f"Redis at {safe} requires a password: give it in the URL, redis://:PASSWORD@host:port/0"
            ) from None
        if no_auth or str(exc).startswith("WRONGPASS"):
            raise AuthError(
                f"Redis at {safe} rejected the credentials ({scrub(exc)}); check BACKFARM_REDIS_URL"
            ) from None
        raise ConfigError(f"Redis at {safe} refused PING: {scrub(exc)}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise ConfigError(f"cannot reach Redis at {safe}: {scrub(exc)}") from None
    finally:
        client.close()


def submit(
    expansion: Expansion, settings: Settings, store: RedisStore, app: Celery | None = None, curves: bool = True
) -> str:
    """Record the sweep's manifest and enqueue its missing jobs in batches; returns the sweep id.

    A sweep that is already recorded (submitted before, or right now from another shell) is not enqueued again:
    the manifest gate makes a double submit harmless. An older one that is unfinished while nothing at all is queued
    or running (its submit died before publishing, or Redis lost the messages) is reconciled right away; otherwise
    :func:`wait` reconciles it if it stalls.
    """
    from backfarm.tasks.data import REMOTE_SOURCES

    sweep_id = expansion.sweep_id
    if not store.create_sweep(sweep_record(expansion, curves)):
        info = _sweep(store, sweep_id)
        lengths = queue_lengths(store)
        idle = lengths[BACKTEST_QUEUE] == 0 and lengths["unacked"] == 0
        if not info.complete and idle and time.time() - info.created_at > RESUBMIT_GRACE_S:
            log.warning("sweep %s was recorded but nothing of it is queued: re-enqueuing what is missing", sweep_id)
            reconcile(sweep_id, settings, store, app)
        return sweep_id
    existing = store.existing(job.job_id for job in expansion.jobs)
    todo = [job for job in expansion.jobs if job.job_id not in existing]
    if not todo:
        return sweep_id
    with _app(settings, app) as celery:
        if expansion.spec.source in REMOTE_SOURCES:
            enqueue_fetches(celery, expansion)
        enqueue(celery, sweep_id, make_batches(todo, farm_batch_size(todo), curves))
    return sweep_id


def reconcile(sweep_id: str, settings: Settings, store: RedisStore, app: Celery | None = None) -> int:
    """Re-enqueue every job of the sweep that is expected but neither done nor dead; returns how many."""
    info = _sweep(store, sweep_id)
    pending = set(store.pending(info.sweep_id))
    if not pending:
        return 0
    jobs = [job for job in rebuild_expansion(info).jobs if job.job_id in pending]
    curves = info.spec.get("curves", True) is not False  # as submitted (the manifest says so only when off)
    with _app(settings, app) as celery:
        enqueue(celery, info.sweep_id, make_batches(jobs, farm_batch_size(jobs), curves))
    return len(jobs)


def cancel(sweep_id: str, settings: Settings, store: RedisStore) -> int:
    """Stop a sweep: queued batches of it are skipped and its unfinished jobs marked dead; returns how many."""
    info = _sweep(store, sweep_id)
    keys = FarmKeys(store.keys.prefix)
    reason = f"cancelled at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"
    with redis_errors():
        store.client.set(keys.cancelled(info.sweep_id), reason)
    pending = store.pending(info.sweep_id)
    with redis_errors():
        for i in range(0, len(pending), 1000):
            store.client.hset(keys.dead(info.sweep_id), mapping=dict.fromkeys(pending[i : i + 1000], reason))
    return len(pending)


def is_cancelled(store: RedisStore, sweep_id: str) -> bool:
    """Whether the sweep was cancelled."""
    with redis_errors():
        return bool(store.client.exists(FarmKeys(store.keys.prefix).cancelled(sweep_id)))


def live_workers(app: Celery, timeout: float = PING_TIMEOUT_S) -> list[str]:
    """Names of the workers that answer a ping within ``timeout`` seconds."""
    try:
        with app.connection_for_write() as conn:  # short-lived, like _publish
            replies = app.control.ping(timeout=timeout, connection=conn) or []
    except Exception as exc:  # a broker hiccup must not end a wait
        log.debug("worker ping failed: %s", exc)
        return []
    return sorted(name for reply in replies for name in reply)


def queue_lengths(store: RedisStore) -> dict[str, int]:
    """Messages waiting in each farm queue (kombu keeps a queue as a Redis list of that name)."""
    with redis_errors():
        pipe = store.client.pipeline(transaction=False)
        for name in QUEUES:
            pipe.llen(name)
        pipe.hlen("unacked")
        lengths = pipe.execute()
    return {**dict(zip(QUEUES, lengths[:-1], strict=True)), "unacked": lengths[-1]}


def progress(store: RedisStore, sweep_id: str) -> Progress:
    """The sweep's progress from the store's sets."""
    info = _sweep(store, sweep_id)
    return Progress(info.sweep_id, info.total, info.done, info.dead, cancelled=is_cancelled(store, info.sweep_id))


LOST_WORKER_STALL_S = 15.0
"""Seconds without progress, once a worker has vanished, before the missing jobs are re-enqueued."""


def wait(
    sweep_id: str,
    settings: Settings,
    store: RedisStore,
    app: Celery | None = None,
    on_update: Updated | None = None,
    poll_s: float = 0.2,
    stall_s: float | None = None,
    timeout_s: float | None = None,
    lost_stall_s: float = LOST_WORKER_STALL_S,
) -> Progress:
    """Poll until the sweep is complete or cancelled (or ``timeout_s`` passes); returns the last progress.

    When nothing finished for ``stall_s`` (default: the visibility timeout plus two restore sweeps) while the
    backtest queue is empty, messages were lost: the pending jobs are reconciled (re-enqueued) automatically. When a
    worker that answered pings misses two in a row, the wait before reconciling shrinks to ``lost_stall_s``.
    Workers are pinged in the background, so a slow ping never delays the progress shown.
    """
    with _app(settings, app) as celery:
        return _wait(sweep_id, settings, store, celery, on_update, poll_s, stall_s, timeout_s, lost_stall_s)


def _wait(
    sweep_id: str,
    settings: Settings,
    store: RedisStore,
    app: Celery,
    on_update: Updated | None,
    poll_s: float,
    stall_s: float | None,
    timeout_s: float | None,
    lost_stall_s: float,
) -> Progress:
    stall_s = stall_s if stall_s is not None else settings.visibility_timeout_s + 2 * settings.restore_interval_s + 5
    started = last_move = time.monotonic()
    window = _RateWindow()
    first = progress(store, sweep_id)
    baseline = first.done + first.dead
    reconciled = 0
    with _Pinger(app) as pinger, _Wakeups(store, sweep_id) as wakeups:
        while True:
            now = time.monotonic()
            # A worker that answered before and no longer does took its unacked batch with it: no need to wait out
            # the visibility timeout before re-enqueueing (a duplicate run is harmless, commits are atomic).
            lost = bool(pinger.missing)
            current = progress(store, sweep_id)
            finished = current.done + current.dead
            if window.samples and finished != window.samples[-1][1]:
                last_move = now
            current.rate = window.add(now, finished)
            current.workers, current.elapsed_s = _known_workers(pinger.workers, wakeups.workers), now - started
            current.queued = queue_lengths(store)[BACKTEST_QUEUE]
            current.finished_here, current.reconciled = finished - baseline, reconciled
            if on_update is not None:
                on_update(current)
            if current.complete or current.cancelled or (timeout_s is not None and now - started >= timeout_s):
                break
            limit = min(stall_s, lost_stall_s) if lost else stall_s
            if now - last_move >= limit and current.queued == 0:
                count = reconcile(current.sweep_id, settings, store, app)
                log.warning("sweep %s made no progress for %.0f s with nothing queued: re-enqueued %d jobs",
                            current.sweep_id, now - last_move, count)  # fmt: skip
                reconciled += count
                last_move = now
            wakeups.wait(poll_s)
    # The first ping may not have come back yet (it is not waited for): the workers that reported batches count.
    current.workers = _known_workers(pinger.workers, wakeups.workers)
    return current


def _known_workers(answered: list[str] | None, reported: set[str]) -> list[str] | None:
    """Workers that answered the last ping or reported a batch of this sweep; ``None`` while neither is known."""
    if answered is None and not reported:
        return None
    return sorted(set(answered or ()) | reported)


class _Wakeups:
    """Messages workers publish after each batch of the sweep they commit: the wait loop wakes on them instead of
    sleeping out its poll interval, so a finished sweep is seen within milliseconds. Polling stays the fallback (a
    message published while nobody listened is simply gone)."""

    def __init__(self, store: RedisStore, sweep_id: str) -> None:
        self.channel = FarmKeys(store.keys.prefix).progress_channel(sweep_id)
        self.store = store
        self.pubsub: Any = None
        self.workers: set[str] = set()
        """Names of the workers whose messages arrived."""

    def __enter__(self) -> _Wakeups:
        try:
            self.pubsub = self.store.client.pubsub(ignore_subscribe_messages=True)
            self.pubsub.subscribe(self.channel)
        except redis.RedisError as exc:
            log.debug("progress messages unavailable, polling only: %s", exc)
            self.pubsub = None
        return self

    def wait(self, timeout: float) -> None:
        """Until a message arrives or ``timeout`` passes; then drop any others already waiting."""
        if self.pubsub is None:
            time.sleep(timeout)
            return
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                if self._note(self.pubsub.get_message(timeout=left)):
                    while self._note(self.pubsub.get_message(timeout=0)):
                        pass
                    return
        except redis.RedisError as exc:
            log.debug("progress messages lost, polling only: %s", exc)
            self.pubsub = None
            time.sleep(max(0.0, deadline - time.monotonic()))

    def _note(self, message: dict[str, Any] | None) -> bool:
        """Remember who sent ``message``; False when there was none."""
        if message is None:
            return False
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            worker = json.loads(message["data"]).get("worker")
            if isinstance(worker, str) and worker:
                self.workers.add(worker)
        return True

    def __exit__(self, *exc: object) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self.pubsub.close()


class _Pinger:
    """Pings the workers every ``PING_EVERY_S`` on a daemon thread; ``workers`` is the latest answer, ``missing``
    the workers that answered an earlier ping but neither of the last two.

    One missed ping proves nothing (a reply later than ``PING_TIMEOUT_S`` on a busy machine, a broker hiccup); two
    in a row, ``PING_EVERY_S`` apart, are what a dead worker looks like.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.workers: list[str] | None = None
        self.missing: frozenset[str] = frozenset()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backfarm-ping", daemon=True)

    def _run(self) -> None:
        seen: set[str] = set()
        previous: set[str] | None = None
        while not self._stop.is_set():
            answer = set(live_workers(self.app))
            self.workers = sorted(answer)
            if previous is not None:
                self.missing = frozenset(seen - answer - previous)
            seen |= answer
            previous = answer
            self._stop.wait(PING_EVERY_S)

    def __enter__(self) -> _Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # A ping in flight is not waited for (it takes at least PING_TIMEOUT_S): a short sweep would otherwise end
        # that much later. The daemon thread finishes it on its own connection; its errors are caught and logged.
        self._stop.set()


@contextmanager
def _app(settings: Settings, app: Celery | None) -> Iterator[Celery]:
    """The caller's app, or one made (and closed) here."""
    if app is not None:
        yield app
        return
    made = create_app(settings)
    try:
        yield made
    finally:
        close_app(made)


def _sweep(store: RedisStore, sweep_id: str) -> SweepInfo:
    info = store.sweep(sweep_id)
    if info is None:
        raise ValidationError(f"unknown sweep '{sweep_id}' (see `backfarm sweeps`)")
    return info
