"""Open the result store the settings ask for: Redis when a URL is configured, else the embedded store."""

from __future__ import annotations

from backfarm.config import Settings
from backfarm.errors import ConfigError
from backfarm.results.embedded import EmbeddedStore
from backfarm.results.parts import INDEX_FILE
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
    old = settings.legacy_store_path
    if old.exists() and not (settings.store_path / INDEX_FILE).exists():
        raise ConfigError(
            f"{settings.data_dir} holds results in the format of backfarm before 0.2 ({old.name}); "
            "convert them once with `backfarm store migrate` (the old file is kept)"
        )
    return EmbeddedStore(settings.store_path)
