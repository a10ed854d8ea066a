"""SQLite transactions end whatever stops them: Ctrl-C or SIGTERM arriving the instant ``BEGIN`` returns (after it
waited for another writer) must not leave the connection inside a transaction, or the next one fails."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from backfarm._util.sqlite import write_transaction
from backfarm.results.parts import Parts


class InterruptedAfterBegin(sqlite3.Connection):
    """A connection on which a signal arrives as soon as a ``BEGIN`` statement has run (once)."""

    armed = True

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        cursor = super().execute(sql, *args)
        if sql.startswith("BEGIN") and self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return cursor


def connect(path: Path) -> InterruptedAfterBegin:
    db = sqlite3.connect(path, isolation_level=None, factory=InterruptedAfterBegin)
    db.execute("CREATE TABLE t (x INTEGER)")
    db.armed = True
    return db


def test_a_write_transaction_interrupted_as_begin_returns_is_rolled_back(tmp_path: Path) -> None:
    db = connect(tmp_path / "a.sqlite")
    with pytest.raises(KeyboardInterrupt), write_transaction(db, threading.Lock(), "test"):
        db.execute("INSERT INTO t VALUES (1)")  # never reached
    assert not db.in_transaction
    with write_transaction(db, threading.Lock(), "test"):  # the next one works
        db.execute("INSERT INTO t VALUES (2)")
    assert db.execute("SELECT x FROM t").fetchall() == [(2,)]


def test_an_interrupted_body_is_rolled_back(tmp_path: Path) -> None:
    db = connect(tmp_path / "b.sqlite")
    db.armed = False
    with pytest.raises(KeyboardInterrupt), write_transaction(db, threading.Lock(), "test"):
        db.execute("INSERT INTO t VALUES (1)")
        raise KeyboardInterrupt
    assert not db.in_transaction and db.execute("SELECT x FROM t").fetchall() == []


def test_a_snapshot_interrupted_as_begin_returns_ends(tmp_path: Path) -> None:
    parts = Parts(tmp_path / "results")
    parts.db.close()
    parts.db = sqlite3.connect(parts.root / "index.sqlite", isolation_level=None, factory=InterruptedAfterBegin)
    with pytest.raises(KeyboardInterrupt), parts.snapshot():
        pass
    assert not parts.db.in_transaction
    with parts.snapshot() as db:  # the next one works
        assert db.execute("SELECT COUNT(*) FROM parts").fetchone() == (0,)
    parts.close()
