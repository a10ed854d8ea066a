"""The paper task: run or resume one paper session on a worker of the ``paper`` queue; and the orphan watchdog.

Delivery is at least once (late acks, requeue on a lost worker, redelivery after the visibility timeout), so a
session may be delivered while it already runs elsewhere. The session's lease decides: the runner that holds it
runs, a second delivery waits at most one lease period for it to expire (its holder died) and otherwise returns at
once. Every write is fenced by the lease, so two runners can never both commit (see
:mod:`backfarm.paper.store.base`).

A worker SIGKILLed mid-session leaves the session ``running`` with a lease that expires. Each worker that consumes
the ``paper`` queue runs a watchdog thread that, every ``WATCHDOG_EVERY_S``, re-enqueues such orphans (one claim per
orphan across the fleet), so the session resumes from its checkpoint on another worker within seconds — without
waiting for Redis' visibility timeout, whose redelivery then finds the session owned and returns.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, Task, signals

from backfarm.config import Settings
from backfarm.errors import ServiceUnavailable, TemporaryError, UserError
from backfarm.farm import lifecycle
from backfarm.farm.keys import PAPER_QUEUE
from backfarm.farm.tasks.retry import backoff, retry_later
from backfarm.paper.lease import LeaseBusy
from backfarm.paper.session import run_session
from backfarm.paper.spec import SessionSpec
from backfarm.paper.store.base import LeaseLost
from backfarm.paper.store.redis_store import RedisSessionStore

log = logging.getLogger(__name__)

WATCHDOG_EVERY_S = 2.0
"""How often a paper worker looks for sessions whose runner died."""
LIMIT_MARGIN_S = 3600.0
"""Added to a session's expected wall-clock length for its task time limit (warm-up fetches, resumes, slowness)."""
MAX_LIMIT_S = 366 * 86400.0
PAPER_TASK = "backfarm.paper.session"
"""The task's explicit name (queued messages name it; renaming a module never strands them)."""


def register(app: Celery) -> Task:
    """Register the session task on ``app`` and the watchdog's start-up hook."""
    signals.worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid="backfarm-paper-watchdog")
    return app.task(name=PAPER_TASK, bind=True, max_retries=None)(session_task)


def session_task(self: Task, session_id: str) -> dict[str, Any]:
    """Celery entry point: run the session under its lease; temporary failures retry (and resume)."""
    settings = self.app.backfarm_settings
    try:
        ctx = lifecycle.context(settings)
        outcome = run_session(ctx.sessions, session_id, settings, results=ctx.store)
    except LeaseBusy:
        log.info("paper session %s runs elsewhere: duplicate delivery ignored", session_id)
        return {"session": session_id, "duplicate": True}
    except LeaseLost as exc:
        log.warning("paper session %s: %s; this runner stops", session_id, exc)
        return {"session": session_id, "lease_lost": True}
    except TemporaryError as exc:
        log.warning("paper session %s: %s; resuming in %.0f s", session_id, exc, backoff(self.request.retries))
        retry_later(self, exc, None)
    except UserError as exc:
        log.error("paper session %s failed: %s", session_id, exc)
        return {"session": session_id, "failed": str(exc)}
    return {"session": session_id, "status": outcome.status, "bars": outcome.bars, "fills": outcome.fills}


def time_limit(spec: SessionSpec) -> float:
    """The hard time limit of a session's task: its expected wall-clock length plus a generous margin."""
    if not spec.replay:
        expected = spec.duration_s
    elif spec.speed is None:
        expected = spec.duration_s / 10_000.0
    else:
        expected = spec.duration_s / spec.speed
    return min(MAX_LIMIT_S, expected + LIMIT_MARGIN_S)


def enqueue_session(app: Celery, spec: SessionSpec) -> None:
    """Publish the session's task on the ``paper`` queue, with time limits sized to the session."""
    limit = time_limit(spec)
    try:
        app.send_task(
            PAPER_TASK, args=(spec.session_id,), queue=PAPER_QUEUE, time_limit=limit, soft_time_limit=limit - 60.0
        )
    except Exception as exc:  # kombu/redis raise many types; the session is stored and can be enqueued again
        raise ServiceUnavailable(
            f"could not enqueue paper session {spec.session_id}: {type(exc).__name__}: {exc}"
        ) from None


def requeue_orphans(app: Celery, store: RedisSessionStore) -> list[str]:
    """Re-enqueue the running sessions whose lease expired (their runner died); returns their ids."""
    requeued = []
    for session_id in store.active_ids():
        info = store.get(session_id)
        if info is None or not info.orphaned:
            continue
        if store.claim_requeue(session_id, 3.0 * info.spec.lease_s):
            enqueue_session(app, info.spec)
            requeued.append(session_id)
            log.warning("paper session %s lost its runner: re-enqueued to resume from its checkpoint", session_id)
    return requeued


class Watchdog(threading.Thread):
    """Calls :func:`requeue_orphans` every ``WATCHDOG_EVERY_S`` in a paper worker's main process."""

    def __init__(self, app: Celery, settings: Settings, every_s: float = WATCHDOG_EVERY_S) -> None:
        super().__init__(name="paper-watchdog", daemon=True)
        self.app, self.settings, self.every_s = app, settings, every_s
        self.halt = threading.Event()

    def run(self) -> None:
        store: RedisSessionStore | None = None
        while not self.halt.wait(self.every_s):
            try:
                store = store or RedisSessionStore(self.settings.require_redis_url())
                requeue_orphans(self.app, store)
            except TemporaryError as exc:
                log.warning("paper watchdog: %s", exc)
            except Exception:  # noqa: BLE001 - the watchdog must outlive any one bad scan
                log.exception("paper watchdog: scan failed")


def _consumes_paper(consumer: Any) -> bool:
    try:
        names = {q.name for q in consumer.task_consumer.queues}
    except AttributeError:
        names = set(getattr(consumer.app.amqp.queues, "consume_from", None) or {})
    return PAPER_QUEUE in names


def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    if sender is None or not hasattr(sender.app, "backfarm_settings") or not _consumes_paper(sender):
        return
    Watchdog(sender.app, sender.app.backfarm_settings).start()
    log.info("paper watchdog started (every %.0f s)", WATCHDOG_EVERY_S)
