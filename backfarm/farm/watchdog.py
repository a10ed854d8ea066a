"""The worker's watchdog: a sweep that stops moving with nothing queued or in flight is re-enqueued by the farm itself.

A waiting ``backfarm backtest`` reconciles a stalled sweep (:meth:`FarmClient.wait`); a sweep submitted with
``--detach``, or whose client went away, has nobody waiting. So each worker's main process looks at the newest
sweeps every :data:`CHECK_S` seconds: one that is incomplete, not cancelled, whose done + dead count has not moved for
the stall time (the visibility timeout plus two restore sweeps and 5 s: a batch a dead worker held is back in the
queue by then) while the backtest queue is empty and no message is unacknowledged, lost its messages (a Redis restart
without persistence, a queue deleted by hand). The first worker to see it takes a lock for the stall time, re-enqueues
its pending jobs (:meth:`FarmClient.reconcile`, safe to repeat: done jobs are skipped) and records what it did under
``reconciled:{sweep}``, which ``backfarm status`` shows.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, signals

from backfarm._util.connection import RedisConnection
from backfarm.config import Settings
from backfarm.errors import BackfarmError
from backfarm.farm.client import FarmClient
from backfarm.farm.keys import BACKTEST_QUEUE, UNACKED, FarmKeys
from backfarm.results.redis_store import RedisStore

__all__ = ["CHECK_S", "RECENT_SWEEPS", "Watchdog", "install", "last_reconcile", "stall_time"]

log = logging.getLogger(__name__)

CHECK_S = 5.0
"""How often a worker looks for stalled sweeps."""
RECENT_SWEEPS = 100
"""How many of the newest sweeps it looks at (older stalled sweeps: ``backfarm sweep reconcile``)."""


def stall_time(settings: Settings) -> float:
    """How long a sweep may stand still with nothing queued or in flight before its messages count as lost."""
    return settings.visibility_timeout_s + 2 * settings.restore_interval_s + 5


def last_reconcile(conn: RedisConnection, keys: FarmKeys, sweep_id: str) -> dict[str, object] | None:
    """What a watchdog last did for ``sweep_id`` (at, worker, jobs), or ``None``."""
    with conn.guard():
        raw = conn.client.get(keys.reconciled(sweep_id))
    return json.loads(raw) if raw else None


@dataclass
class _Seen:
    finished: int
    since: float


@dataclass
class Watchdog:
    """A daemon thread in a worker's main process that re-enqueues stalled sweeps (see the module docstring)."""

    settings: Settings
    app: Celery
    worker: str
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, _Seen] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Look every :data:`CHECK_S` seconds until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="backfarm-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop looking."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CHECK_S)

    def _run(self) -> None:
        conn = RedisConnection(self.settings.require_redis_url())
        try:
            with RedisStore(conn) as store, FarmClient(self.settings, store, self.app) as farm:
                while not self._stop.wait(CHECK_S):
                    try:
                        self.check(farm)
                    except BackfarmError as exc:  # Redis away: try again next time
                        log.debug("watchdog: %s", exc)
        finally:
            conn.close()

    def check(self, farm: FarmClient) -> list[tuple[str, int]]:
        """One look: re-enqueue the stalled sweeps this worker gets the lock for; what it re-enqueued."""
        assert isinstance(farm.store, RedisStore)
        now = self.clock()
        queues = farm.ledger.queue_lengths()
        idle = queues[BACKTEST_QUEUE] == 0 and queues[UNACKED] == 0
        done: list[tuple[str, int]] = []
        open_sweeps = set()
        for info in farm.store.recent_sweeps(RECENT_SWEEPS):
            if info.complete:
                continue
            open_sweeps.add(info.sweep_id)
            finished = info.done + info.dead
            seen = self._seen.get(info.sweep_id)
            if seen is None or seen.finished != finished or not idle:
                self._seen[info.sweep_id] = _Seen(finished, now)
                continue
            if now - seen.since < stall_time(self.settings) or farm.ledger.is_cancelled(info.sweep_id):
                continue
            if not self._claim(farm, info.sweep_id):
                seen.since = now  # another worker is on it
                continue
            count = farm.reconcile(info.sweep_id)
            note = {"at": time.time(), "worker": self.worker, "jobs": count, "stalled_s": round(now - seen.since)}
            seen.since = now
            with farm.store.conn.guard():
                farm.store.conn.client.set(farm.ledger.keys.reconciled(info.sweep_id), json.dumps(note))
            log.warning("sweep %s stood still with nothing queued or in flight: re-enqueued %d jobs", info.sweep_id,
                        count)  # fmt: skip
            done.append((info.sweep_id, count))
        for sweep_id in set(self._seen) - open_sweeps:
            del self._seen[sweep_id]
        return done

    def _claim(self, farm: FarmClient, sweep_id: str) -> bool:
        """One watchdog of the farm per stalled sweep and stall time."""
        key = farm.ledger.keys.lock(f"reconcile:{sweep_id}")
        with farm.store.conn.guard():
            return bool(farm.store.conn.client.set(key, self.worker, nx=True, px=int(stall_time(self.settings) * 1e3)))


_running: list[Watchdog] = []


def install(settings: Settings) -> None:
    """Run a watchdog in the main process of the worker about to start (called by ``backfarm worker`` when it
    consumes the backtest queue)."""

    def ready(sender: Any = None, **_: Any) -> None:
        if sender is not None and not _running:
            watchdog = Watchdog(settings, sender.app, getattr(sender, "hostname", "") or "worker")
            watchdog.start()
            _running.append(watchdog)

    def shutdown(**_: Any) -> None:
        while _running:
            _running.pop().stop()

    signals.worker_ready.connect(ready, weak=False, dispatch_uid="backfarm-watchdog-start")
    signals.worker_shutdown.connect(shutdown, weak=False, dispatch_uid="backfarm-watchdog-stop")
