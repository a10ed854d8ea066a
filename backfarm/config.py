"""Typed, frozen settings, read once from ``BACKFARM_*`` environment variables (and CLI flags) and passed down.

Nothing else in backfarm reads the environment: the CLI and the worker start-up build one ``Settings`` and hand it
to the code that needs it. Secrets (the Coinbase private key, passwords inside URLs) never appear in ``repr``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from backfarm.errors import ConfigError

DEFAULT_COINBASE_API_URL = "https://api.coinbase.com"
DEFAULT_COINBASE_WS_URL = "wss://advanced-trade-ws.coinbase.com"

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@", re.IGNORECASE)


def redact_url(url: str | None) -> str | None:
    """Hide the password part of ``scheme://user:password@host`` URLs."""
    if url is None:
        return None
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/backfarm`` (``~/.local/share/backfarm``): candles, the embedded store, caches."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "backfarm"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with its default. Built by :meth:`from_env`; flags override with :meth:`with_`."""

    data_dir: Path = field(default_factory=default_data_dir)
    """Root of the candle cache and the embedded result store (``BACKFARM_DATA_DIR``)."""
    redis_url: str | None = None
    """Redis URL of the farm (``BACKFARM_REDIS_URL``); ``None`` runs everything locally."""
    max_gap_share: float = 0.10
    """Largest share of missing bars a window may have before loading fails (``BACKFARM_MAX_GAP_SHARE``)."""
    open_month_ttl_s: float = 3600.0
    """Age after which the current (open) month of cached candles is refreshed (``BACKFARM_OPEN_MONTH_TTL``)."""
    coinbase_api_url: str = DEFAULT_COINBASE_API_URL
    """Base URL of the Coinbase REST API (``BACKFARM_COINBASE_API_URL``); point it at ``backfarm sim``."""
    coinbase_ws_url: str = DEFAULT_COINBASE_WS_URL
    """Coinbase market-data WebSocket URL (``BACKFARM_COINBASE_WS_URL``)."""
    coinbase_key_name: str | None = None
    """CDP key name ``organizations/{org}/apiKeys/{id}`` (``BACKFARM_COINBASE_KEY_NAME``)."""
    coinbase_private_key: str | None = field(default=None, repr=False)
    """CDP private key PEM (``BACKFARM_COINBASE_PRIVATE_KEY``); never shown."""
    coinbase_key_file: Path | None = None
    """A downloaded CDP key JSON file (``BACKFARM_COINBASE_KEY_FILE``)."""
    flower_auth: str | None = field(default=None, repr=False)
    """``user:password`` for Flower's basic auth (``BACKFARM_FLOWER_AUTH``); never shown."""
    task_soft_time_limit_s: float = 540.0
    """Farm: a batch task gets ``SoftTimeLimitExceeded`` after this long (``BACKFARM_TASK_SOFT_TIME_LIMIT``)."""
    task_time_limit_s: float = 600.0
    """Farm: a batch task's process is killed after this long (``BACKFARM_TASK_TIME_LIMIT``); > the soft limit."""
    visibility_timeout_s: float = 1200.0
    """Farm: an unacknowledged message is redelivered after this long (``BACKFARM_VISIBILITY_TIMEOUT``); > the hard
    limit, and the same on every worker (the shortest in the fleet wins)."""
    restore_interval_s: float = 10.0
    """Farm: how often each worker looks for messages past the visibility timeout (``BACKFARM_RESTORE_INTERVAL``)."""
    max_attempts: int = 3
    """Farm: runs of one job before it is given up as dead (``BACKFARM_MAX_ATTEMPTS``)."""
    worker_max_tasks_per_child: int = 200
    """Farm: a worker process is replaced after this many batches (``BACKFARM_WORKER_MAX_TASKS_PER_CHILD``)."""
    worker_memo_mb: float = 192.0
    """Farm: candle memory kept per worker process, MiB (``BACKFARM_WORKER_MEMO_MB``)."""
    redis_outage_s: float = 120.0
    """Farm: how long a waiting client (``backtest``, ``status --watch``) rides out an unreachable Redis before it
    gives up (``BACKFARM_REDIS_OUTAGE``); the sweep itself carries on either way."""

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            if not f.repr:
                value = getattr(self, f.name)
                shown.append(f"{f.name}={'***' if value else None}")
                continue
            value = getattr(self, f.name)
            if f.name == "redis_url":
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read ``BACKFARM_*`` variables; unset ones keep their defaults."""
        env = dict(os.environ if env is None else env)

        def get(name: str) -> str | None:
            value = env.get(f"BACKFARM_{name}")
            return value if value not in (None, "") else None

        kwargs: dict[str, object] = {}
        if (v := get("DATA_DIR")) is not None:
            kwargs["data_dir"] = Path(v).expanduser()
        if (v := get("REDIS_URL")) is not None:
            kwargs["redis_url"] = v
        if (v := get("MAX_GAP_SHARE")) is not None:
            kwargs["max_gap_share"] = _float("BACKFARM_MAX_GAP_SHARE", v, 0.0, 1.0)
        if (v := get("OPEN_MONTH_TTL")) is not None:
            kwargs["open_month_ttl_s"] = _float("BACKFARM_OPEN_MONTH_TTL", v, 0.0, None)
        for name, attr in (
            ("COINBASE_API_URL", "coinbase_api_url"),
            ("COINBASE_WS_URL", "coinbase_ws_url"),
            ("COINBASE_KEY_NAME", "coinbase_key_name"),
            ("COINBASE_PRIVATE_KEY", "coinbase_private_key"),
            ("FLOWER_AUTH", "flower_auth"),
        ):
            if (v := get(name)) is not None:
                kwargs[attr] = v
        if (v := get("COINBASE_KEY_FILE")) is not None:
            kwargs["coinbase_key_file"] = Path(v).expanduser()
        for name, attr, low in (
            ("TASK_SOFT_TIME_LIMIT", "task_soft_time_limit_s", 0.1),
            ("TASK_TIME_LIMIT", "task_time_limit_s", 0.1),
            ("VISIBILITY_TIMEOUT", "visibility_timeout_s", 1.0),
            ("RESTORE_INTERVAL", "restore_interval_s", 0.1),
            ("WORKER_MEMO_MB", "worker_memo_mb", 1.0),
            ("REDIS_OUTAGE", "redis_outage_s", 0.0),
        ):
            if (v := get(name)) is not None:
                kwargs[attr] = _float(f"BACKFARM_{name}", v, low, None)
        for name, attr in (
            ("MAX_ATTEMPTS", "max_attempts"),
            ("WORKER_MAX_TASKS_PER_CHILD", "worker_max_tasks_per_child"),
        ):
            if (v := get(name)) is not None:
                kwargs[attr] = int(_float(f"BACKFARM_{name}", v, 1.0, None))
        return cls(**kwargs)  # type: ignore[arg-type]

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields replaced (``None`` values are ignored, so unset flags change nothing)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    def require_redis_url(self) -> str:
        """The farm's Redis URL, or a ConfigError saying how to give one."""
        if not self.redis_url:
            raise ConfigError(
                "no Redis configured: set BACKFARM_REDIS_URL or pass --redis redis://[:password@]host:6379/0"
            )
        scheme = urlsplit(self.redis_url).scheme
        if scheme not in ("redis", "rediss"):
            raise ConfigError(f"the Redis URL must start with redis:// or rediss:// (TLS), got {scheme or 'no'} scheme")
        return self.redis_url

    @property
    def candles_dir(self) -> Path:
        """Root of the Parquet candle cache."""
        return self.data_dir / "candles"

    @property
    def store_path(self) -> Path:
        """The embedded result store: a directory of Parquet parts and their index."""
        return self.data_dir / "results"

    @property
    def legacy_store_path(self) -> Path:
        """Where backfarm before 0.2 kept the embedded store (one SQLite file); ``backfarm store migrate`` reads it."""
        return self.data_dir / "results.sqlite"


def _float(name: str, raw: str, low: float, high: float | None) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be {bound}, got {raw!r}")
    return value
