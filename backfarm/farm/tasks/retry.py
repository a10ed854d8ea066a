"""Retrying a task later without ever dropping its message: what the batch and paper tasks do on temporary errors."""

from __future__ import annotations

from typing import NoReturn

import redis
from celery import Task
from celery.exceptions import Reject, Retry
from kombu.exceptions import OperationalError

__all__ = ["PUBLISH_ERRORS", "backoff", "retry_later"]

PUBLISH_ERRORS = (OperationalError, redis.RedisError, OSError)
"""What publishing a message raises when the broker is away."""


def backoff(retries: int) -> float:
    """Seconds before retry number ``retries + 1``: 1, 2, 4 … 30."""
    return min(30.0, 2.0 ** min(retries, 5))


def retry_later(task: Task, exc: Exception, max_retries: int | None) -> NoReturn:
    """Retry ``task`` after :func:`backoff`; when the retry cannot be published (the broker is away), hand the message
    back (or, with Redis unreachable, leave it unacknowledged, to be restored after the visibility timeout) instead
    of acknowledging it, which would drop the work."""
    try:
        raise task.retry(exc=exc, countdown=backoff(task.request.retries), max_retries=max_retries) from None
    except Retry:
        raise
    except PUBLISH_ERRORS as failed:
        raise Reject(f"could not publish the retry ({failed}); returning the message", requeue=True) from None
