"""Worker start-up: what each worker process builds once, after the fork and never at import.

The main worker process warms the numba kernels up before it forks its pool (``worker_init``), so every pool
process starts hot. Each pool process then builds its own Redis result store and its own memory-bounded candle memo
(``worker_process_init``): connections are never shared across a fork. Tasks reach both through :func:`context`,
which also builds them lazily where no pool signal fires (the ``solo`` pool, tests).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import signals

from backfarm.config import Settings
from backfarm.tasks.runner import CandleMemo, warm_up

if TYPE_CHECKING:
    from backfarm.leaderboard.redis_store import RedisStore

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """Per-process clients of a worker: the result store and the candle memo."""

    settings: Settings
    store: RedisStore
    memo: CandleMemo
    pid: int

    def close(self) -> None:
        """Drop the Redis connections."""
        self.store.close()


_context: WorkerContext | None = None
_settings: Settings | None = None


def build_context(settings: Settings) -> WorkerContext:
    """Open this process's store and memo (the memo holds at most ``worker_memo_mb`` MiB of candles)."""
    from backfarm.leaderboard.redis_store import RedisStore
    from backfarm.workers.app import require_redis_url

    store = RedisStore(require_redis_url(settings))
    memo = CandleMemo(settings, max_bytes=int(settings.worker_memo_mb * 2**20))
    return WorkerContext(settings=settings, store=store, memo=memo, pid=os.getpid())


def context(settings: Settings | None = None) -> WorkerContext:
    """This process's context, built on first use (and rebuilt in a forked child that inherited its parent's)."""
    global _context
    if _context is None or _context.pid != os.getpid():
        chosen = settings or _settings
        if chosen is None:
            raise RuntimeError("the worker was not configured: call lifecycle.install(settings) first")
        _context = build_context(chosen)
    return _context


def install(settings: Settings) -> None:
    """Connect the start-up hooks for a worker running with ``settings`` (called by ``backfarm worker``)."""
    global _settings
    _settings = settings
    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="backfarm-worker-init")
    signals.worker_process_init.connect(_on_process_init, weak=False, dispatch_uid="backfarm-process-init")
    signals.worker_process_shutdown.connect(_on_process_shutdown, weak=False, dispatch_uid="backfarm-process-stop")


def _on_worker_init(**_: Any) -> None:
    # Before the pool forks: children inherit compiled kernels instead of each loading them.
    warm_up()


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
