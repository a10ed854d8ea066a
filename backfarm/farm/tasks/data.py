"""The candle fetch task on the ``data`` queue: bring one window's cache up to date under the cluster lock and limit."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from celery import Celery, Task

from backfarm.errors import TemporaryError, UserError
from backfarm.farm import lifecycle
from backfarm.farm.fetch import fetch_window

log = logging.getLogger(__name__)

FETCH_TASK = "backfarm.data.fetch"
"""The task's explicit name (queued messages name it; renaming a module never strands them)."""


def register(app: Celery) -> Task:
    """Register the fetch task on ``app`` under its explicit name (routed to the ``data`` queue)."""
    return app.task(name=FETCH_TASK, bind=True, max_retries=8)(fetch_task)


def fetch_task(self: Task, source: str, symbol: str, granularity: str, start: str, end: str) -> dict[str, Any]:
    """Celery entry point of a candle fetch; user errors (unknown symbol, no data) are logged, not retried."""
    ctx = lifecycle.context(self.app.backfarm_settings)
    try:
        report = fetch_window(ctx, (source, symbol, granularity, start, end))
    except TemporaryError as exc:
        raise self.retry(exc=exc, countdown=min(60.0, 2.0 ** (self.request.retries + 1))) from None
    except UserError as exc:
        log.error("fetch of %s %s %s..%s failed: %s", symbol, granularity, start, end, exc)
        return {"error": str(exc)}
    return asdict(report)
