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
    deadlocks. A database still busy after the connection's timeout is a ``TemporaryError`` naming ``what``.

    Whatever stops it — an error, or Ctrl-C / SIGTERM arriving at any point, even the instant ``BEGIN`` returns after
    waiting for another writer — rolls the transaction back, so the connection is never left inside one (the next
    ``BEGIN`` on it would fail with "cannot start a transaction within a transaction")."""
    with lock:
        try:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise TemporaryError(f"{what} is busy: {exc}") from None
            yield db
            with writing(what):
                db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
