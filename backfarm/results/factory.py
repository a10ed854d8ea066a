"""Open the result store the settings ask for: Redis when a URL is configured, else the embedded store.

Read-only commands open :class:`~backfarm.results.reader.EmbeddedReader` (or the Redis store) directly instead, so
they do not load what only writers need (Arrow for the embedded store, the Redis client for the other)."""

from __future__ import annotations

from backfarm.config import Settings
from backfarm.results.embedded import EmbeddedStore
from backfarm.results.parts import embedded_root
from backfarm.results.redis_store import RedisStore
from backfarm.results.store import ResultStore


def open_store(settings: Settings) -> ResultStore:
    """A :class:`RedisStore` on ``settings.redis_url`` if set, else the :class:`EmbeddedStore` at
    ``settings.store_path``.

    Raises :class:`~backfarm.errors.ServiceUnavailable` / :class:`~backfarm.errors.AuthError` when Redis cannot be
    used, :class:`~backfarm.errors.ConfigError` when the embedded store cannot be opened, or when the data directory
    holds results in the old single-file format that have not been migrated yet (nothing is lost: the old file stays).
    """
    if settings.redis_url:
        return RedisStore(settings.redis_url)
    return EmbeddedStore(embedded_root(settings))
