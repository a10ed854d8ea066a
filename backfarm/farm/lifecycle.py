"""Worker start-up: what each worker process builds once, after the fork and never at import.

The main worker process warms the numba kernels up before it forks its pool (``worker_init``), so every pool
process starts hot. Each pool process then builds its own :class:`WorkerContext` (``worker_process_init``): one Redis
connection shared by the result store and the farm's ledger, a memory-bounded candle memo, and the process's
cluster-locked candle sources. Connections are never shared across a fork. Tasks reach the context through
:func:`context`, which also builds it lazily where no pool signal fires (the ``solo`` pool, tests).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import signals

from backfarm._util.connection import RedisConnection
from backfarm.candles.memo import CandleMemo
from backfarm.candles.sources.base import CandleSource
from backfarm.config import Settings
from backfarm.core.jobs import DataKey
from backfarm.execution.runner import warm_up
from backfarm.farm.keys import QUEUES
from backfarm.farm.ledger import Ledger
from backfarm.farm.presence import Announcer, Presence
from backfarm.paper.store.redis_store import RedisSessionStore
from backfarm.results.redis_store import RedisStore
from backfarm.strategies.registry import all_strategies, identity

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """Per-process state of a worker: one Redis connection and the result store, ledger and paper session store on it,
    and the candle memo."""

    settings: Settings
    conn: RedisConnection
    store: RedisStore
    ledger: Ledger
    sessions: RedisSessionStore
    memo: CandleMemo
    pid: int
    sources: dict[str, CandleSource] = field(default_factory=dict)
    """This process's cluster-locked candle sources by name (:func:`backfarm.farm.fetch.cluster_source`)."""
    checked: dict[DataKey, float] = field(default_factory=dict)
    """When this process last brought each remote window's cache up to date (monotonic seconds)."""

    def close(self) -> None:
        """Drop the Redis connections."""
        self.conn.close()


_context: WorkerContext | None = None
_settings: Settings | None = None
_queues: tuple[str, ...] = QUEUES
_announcer: Announcer | None = None


def build_context(settings: Settings) -> WorkerContext:
    """Open this process's connection and the stores on it, and its memo (which holds at most ``worker_memo_mb``
    MiB)."""
    conn = RedisConnection(settings.require_redis_url())
    try:
        store, sessions = RedisStore(conn), RedisSessionStore(conn)
    except Exception:
        conn.close()
        raise
    memo = CandleMemo(settings, max_bytes=int(settings.worker_memo_mb * 2**20))
    return WorkerContext(settings, conn, store, Ledger(conn), sessions, memo, os.getpid())


def context(settings: Settings | None = None) -> WorkerContext:
    """This process's context, built on first use (and rebuilt in a forked child that inherited its parent's)."""
    global _context
    if _context is None or _context.pid != os.getpid():
        chosen = settings or _settings
        if chosen is None:
            raise RuntimeError("the worker was not configured: call lifecycle.install(settings) first")
        _context = build_context(chosen)
    return _context


def install(settings: Settings, queues: Sequence[str] = QUEUES) -> None:
    """Connect the start-up hooks for a worker running with ``settings`` on ``queues`` (called by ``backfarm
    worker``)."""
    global _settings, _queues
    _settings, _queues = settings, tuple(queues)
    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="backfarm-worker-init")
    signals.worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid="backfarm-worker-ready")
    signals.worker_shutdown.connect(_on_worker_shutdown, weak=False, dispatch_uid="backfarm-worker-stop")
    signals.worker_process_init.connect(_on_process_init, weak=False, dispatch_uid="backfarm-process-init")
    signals.worker_process_shutdown.connect(_on_process_shutdown, weak=False, dispatch_uid="backfarm-process-stop")


def _on_worker_init(**_: Any) -> None:
    # Before the pool forks: children inherit compiled kernels instead of each loading them.
    warm_up()


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    # The main process announces this worker's strategies until it stops (backfarm.farm.presence).
    global _announcer
    if _settings is None or _announcer is not None:
        return
    conn = RedisConnection(_settings.require_redis_url())
    identities = {name: identity(name) for name in all_strategies()}
    worker = getattr(sender, "hostname", None) or f"backfarm-{os.getpid()}"
    _announcer = Announcer(Presence(conn), worker, identities, _queues)
    _announcer.start()
    log.info("worker %s runs strategies %s", worker, ", ".join(f"{k} {v}" for k, v in identities.items()))


def _on_worker_shutdown(**_: Any) -> None:
    global _announcer
    if _announcer is not None:
        _announcer.stop()
        _announcer.presence.conn.close()
        _announcer = None


def _on_process_init(**_: Any) -> None:
    global _context
    _context = None
    ctx = context()
    warm_up()  # cheap after the parent's warm-up; needed where the pool does not fork (spawn)
    log.info("worker process %d ready (candle memo %.0f MiB)", ctx.pid, ctx.settings.worker_memo_mb)


def _on_process_shutdown(**_: Any) -> None:
    global _context
    if _context is not None and _context.pid == os.getpid():
        _context.close()
    _context = None
