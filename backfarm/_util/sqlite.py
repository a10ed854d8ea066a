"""One SQLite write transaction, shared by the embedded result store and the embedded paper session store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from backfarm._util.disk import writing
from backfarm.errors import TemporaryError


@contextmanager
def write_transaction(db: sqlite3.Connection, lock: Any, what: str) -> Iterator[sqlite3.Connection]:
    """One write transaction under ``lock``; ``IMMEDIATE`` takes the write lock up front, so no reader-turned-writer
    deadlocks. A database still busy after the connection's timeout is a ``TemporaryError`` naming ``what``."""
    with lock:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise TemporaryError(f"{what} is busy: {exc}") from None
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        with writing(what):
            db.execute("COMMIT")
