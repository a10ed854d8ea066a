"""Where paper sessions live: Redis on the farm, ``paper.sqlite`` in the data directory otherwise."""

from __future__ import annotations

from pathlib import Path

from backfarm.config import Settings
from backfarm.paper.store.base import SESSION_FILE, SessionStore
from backfarm.paper.store.redis_store import RedisSessionStore
from backfarm.paper.store.sqlite import SQLiteSessionStore


def open_session_store(settings: Settings) -> SessionStore:
    """Redis when the settings name a Redis URL, else ``{data_dir}/paper.sqlite``."""
    if settings.redis_url:
        return RedisSessionStore(settings.redis_url)
    return SQLiteSessionStore(Path(settings.data_dir) / SESSION_FILE)
