"""The farm's Celery app, built from :class:`~backfarm.config.Settings` (never at import time), with its tasks.

Every setting below follows ``reference/reliability.md`` §1.2 and DESIGN §7: Celery on Redis delivers at least once,
so messages are JSON only, acknowledged late, requeued when a worker process dies, fetched one per free process, and
the three clocks are tied together (soft time limit < hard time limit < visibility timeout, the same on every worker).
Completeness is not Celery's job here: the tasks commit idempotently and ``backfarm sweep reconcile`` re-enqueues what
is missing, so results are ignored and no chords are used.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from celery import Celery
from kombu import Exchange, Queue

from backfarm.config import Settings
from backfarm.errors import ConfigError
from backfarm.farm.keys import BACKTEST_QUEUE, DATA_QUEUE, PAPER_QUEUE, QUEUES
from backfarm.farm.tasks import backtest, data, paper
from backfarm.farm.tasks.backtest import BATCH_TASK
from backfarm.farm.tasks.data import FETCH_TASK
from backfarm.farm.tasks.paper import PAPER_TASK

SOFT_SHUTDOWN_S = 30.0
"""On a cold shutdown (SIGQUIT, or SIGTERM with ``REMAP_SIGTERM=SIGQUIT``) running batches get this long, then their
messages are pushed back for another worker instead of waiting out the visibility timeout."""
_SSL_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


def check_time_limits(settings: Settings) -> None:
    """Refuse clocks that would let Redis hand a running batch to a second worker: soft < hard < visibility."""
    soft, hard, vis = settings.task_soft_time_limit_s, settings.task_time_limit_s, settings.visibility_timeout_s
    if not soft < hard:
        raise ConfigError(
            f"BACKFARM_TASK_SOFT_TIME_LIMIT ({soft:g} s) must be below BACKFARM_TASK_TIME_LIMIT ({hard:g} s)"
        )
    if not hard < vis:
        raise ConfigError(
            f"BACKFARM_TASK_TIME_LIMIT ({hard:g} s) must be below BACKFARM_VISIBILITY_TIMEOUT ({vis:g} s): "
            "otherwise a batch still running is redelivered to another worker"
        )


def ssl_options(url: str) -> dict[str, Any] | None:
    """TLS options for a ``rediss://`` URL: certificates are always verified (``ssl_cert_reqs=required``).

    A CA bundle, client certificate and key may be given as URL query parameters (``?ssl_ca_certs=/path/ca.pem``),
    the same names redis-py reads for the result store, so one URL configures both clients.
    """
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return None
    query = dict(parse_qsl(parts.query))
    reqs = query.get("ssl_cert_reqs", "required").lower()
    if reqs not in ("required", "cert_required"):
        raise ConfigError("rediss:// URLs must verify the server certificate (ssl_cert_reqs=required)")
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if query.get(key):
            options[key] = query[key]
    return options


def broker_url(url: str) -> str:
    """The URL without the TLS query parameters (kombu takes those as ``broker_use_ssl``)."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query) if k not in _SSL_KEYS]
    query = "&".join(f"{k}={v}" for k, v in kept)
    return parts._replace(query=query).geturl()


def transport_options(settings: Settings) -> dict[str, Any]:
    """kombu's Redis transport: the visibility timeout and how fast overdue messages are restored."""
    return {
        "visibility_timeout": int(max(1, round(settings.visibility_timeout_s))),
        # kombu >= 5.6.3: scan for overdue messages every interval instead of every 10th interval (~100 s lag).
        "unacked_restore_interval": max(1, int(round(settings.restore_interval_s))),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 5,
        # A broker that vanishes without closing TCP (a cut cable) must not block a publish forever.
        "socket_timeout": 30,
        "socket_keepalive": True,
        "health_check_interval": 10,
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting of the farm (see the module docstring for why each is what it is)."""
    check_time_limits(settings)
    url = settings.require_redis_url()
    transport = transport_options(settings)
    config: dict[str, Any] = {
        "broker_url": broker_url(url),
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": 100,
        "broker_connection_timeout": 4.0,
        "broker_channel_error_retry": True,
        # Serialization: JSON only, in every direction, so a message in the queue can never run code by unpickling.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Delivery: ack after the task returns; requeue when the process dies; one message per free process. Every
        # task inherits these (and task_ignore_result below): the registrations in farm.tasks do not repeat them.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "visibility_timeout": transport["visibility_timeout"],
        # Keep running batches after a broker blip: their commit is idempotent and a redelivery hits the done guard.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_max_tasks_per_child": settings.worker_max_tasks_per_child,
        "worker_soft_shutdown_timeout": SOFT_SHUTDOWN_S,
        "worker_disable_rate_limits": True,
        "worker_hijack_root_logger": True,
        # Fan-in comes from our own Redis sets, never from Celery results.
        "task_ignore_result": True,
        "result_backend": None,
        "task_store_errors_even_if_ignored": False,
        "task_track_started": False,
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        "task_queues": tuple(_queue(name) for name in QUEUES),
        "task_default_queue": BACKTEST_QUEUE,
        "task_create_missing_queues": False,
        "task_routes": {
            BATCH_TASK: {"queue": BACKTEST_QUEUE},
            FETCH_TASK: {"queue": DATA_QUEUE},
            PAPER_TASK: {"queue": PAPER_QUEUE},
        },
        "enable_utc": True,
        "timezone": "UTC",
    }
    tls = ssl_options(url)
    if tls is not None:
        config["broker_use_ssl"] = tls
    return config


def _queue(name: str) -> Queue:
    """A direct queue whose Redis list kombu names after it (:mod:`backfarm.farm.keys`)."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]  # kombu


def create_app(settings: Settings) -> Celery:
    """A Celery app for ``settings`` with the farm's tasks registered. Opens no connection."""
    app = Celery("backfarm", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.backfarm_settings = settings  # read by the worker start-up hooks
    backtest.register(app)
    data.register(app)
    paper.register(app)
    return app


def close_app(app: Celery) -> None:
    """Done with a client-side app (the farm's client code opens only short-lived connections, never the pool)."""
    app.close()
