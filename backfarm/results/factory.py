"""Open the result store the settings ask for: Redis when a URL is configured, else the embedded SQLite file."""

from __future__ import annotations

from backfarm.config import Settings
from backfarm.results.redis_store import RedisStore
from backfarm.results.sqlite import SQLiteStore
from backfarm.results.store import ResultStore


def open_store(settings: Settings) -> ResultStore:
    """A :class:`RedisStore` on ``settings.redis_url`` if set, else a :class:`SQLiteStore` at ``settings.store_path``.

    Raises :class:`~backfarm.errors.ServiceUnavailable` / :class:`~backfarm.errors.AuthError` when Redis cannot be
    used, :class:`~backfarm.errors.ConfigError` when the SQLite file cannot be opened.
    """
    if settings.redis_url:
        return RedisStore(settings.redis_url)
    path = settings.store_path
    path.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(path)
