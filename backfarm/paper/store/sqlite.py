"""Paper sessions in a local SQLite file (WAL), for the embedded path; safe across processes on one machine."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backfarm._util.sqlite import write_transaction
from backfarm.errors import ConfigError
from backfarm.paper.accounts import Fill, RoundTrip
from backfarm.paper.spec import SessionSpec
from backfarm.paper.store.base import (
    ACTIVE,
    Checkpoint,
    Commit,
    LeaseLost,
    SessionInfo,
    SessionStore,
    encode,
    encode_row,
    session_info,
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, created_at REAL, meta TEXT NOT NULL,"
    " lease TEXT, lease_until REAL, stop REAL)",
    "CREATE TABLE IF NOT EXISTS state (session TEXT, name TEXT, value TEXT, PRIMARY KEY (session, name))",
    "CREATE TABLE IF NOT EXISTS fills (session TEXT, id TEXT, value TEXT, PRIMARY KEY (session, id))",
    "CREATE TABLE IF NOT EXISTS trades (session TEXT, id TEXT, value TEXT, PRIMARY KEY (session, id))",
    "CREATE TABLE IF NOT EXISTS equity (session TEXT, idx INTEGER, value TEXT, PRIMARY KEY (session, idx))",
    "CREATE TABLE IF NOT EXISTS bars (session TEXT, idx INTEGER, value TEXT, PRIMARY KEY (session, idx))",
)


class SQLiteSessionStore(SessionStore):
    """Sessions in a local SQLite file (WAL), for the embedded path; safe across processes on one machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the paper session store {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with write_transaction(self._db, self._lock, f"the paper session store {self.path}") as db:
            yield db

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _meta(self, session_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT meta FROM sessions WHERE id = ?", (session_id,))
        return json.loads(rows[0][0]) if rows else None

    def create(self, spec: SessionSpec) -> None:
        meta = {"spec": spec.to_dict(), "status": "queued", "created_at": spec.created_at}
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions (id, created_at, meta) VALUES (?, ?, ?)",
                (spec.session_id, spec.created_at, encode(meta)),
            )

    def get(self, session_id: str) -> SessionInfo | None:
        rows = self._rows("SELECT meta, lease, lease_until, stop FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            return None
        meta_text, lease, until, stop = rows[0]
        meta = json.loads(meta_text)
        state = dict(self._rows("SELECT name, value FROM state WHERE session = ?", (session_id,)))
        alive = lease is not None and (until or 0.0) > time.time()
        strings = {k: v if isinstance(v, str) else encode(v) for k, v in meta.items() if k != "spec"}
        strings["spec"] = encode(meta["spec"])
        return session_info(strings, state, alive, stop is not None)

    def session_ids(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT id FROM sessions ORDER BY created_at DESC, id")]

    def active_ids(self) -> list[str]:
        rows = self._rows("SELECT id, meta FROM sessions ORDER BY id")
        return [sid for sid, meta in rows if json.loads(meta).get("status") in ACTIVE]

    def update(self, session_id: str, **fields: Any) -> None:
        with self._tx() as db:
            rows = db.execute("SELECT meta FROM sessions WHERE id = ?", (session_id,)).fetchall()
            if not rows:
                return
            meta = json.loads(rows[0][0])
            meta.update(fields)
            meta["updated_at"] = time.time()
            db.execute("UPDATE sessions SET meta = ? WHERE id = ?", (encode(meta), session_id))

    def bump_resumes(self, session_id: str) -> int:
        with self._tx() as db:
            meta = json.loads(db.execute("SELECT meta FROM sessions WHERE id = ?", (session_id,)).fetchone()[0])
            meta["resumes"] = int(meta.get("resumes", 0)) + 1
            db.execute("UPDATE sessions SET meta = ? WHERE id = ?", (encode(meta), session_id))
            return int(meta["resumes"])

    def acquire(self, session_id: str, token: str, ttl_s: float) -> bool:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE sessions SET lease = ?, lease_until = ? WHERE id = ? AND "
                "(lease IS NULL OR lease = ? OR lease_until < ?)",
                (token, now + ttl_s, session_id, token, now),
            )
            return cur.rowcount == 1

    def renew(self, session_id: str, token: str, ttl_s: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE sessions SET lease_until = ? WHERE id = ? AND lease = ?",
                (time.time() + ttl_s, session_id, token),
            )
            return cur.rowcount == 1

    def release(self, session_id: str, token: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE sessions SET lease = NULL, lease_until = NULL WHERE id = ? AND lease = ?", (session_id, token)
            )

    def lease_alive(self, session_id: str) -> bool:
        rows = self._rows("SELECT lease, lease_until FROM sessions WHERE id = ?", (session_id,))
        return bool(rows) and rows[0][0] is not None and (rows[0][1] or 0.0) > time.time()

    def commit(self, session_id: str, token: str, commit: Commit) -> int:
        with self._tx() as db:
            held = db.execute("SELECT lease, lease_until FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if held is None or held[0] != token:
                raise LeaseLost(f"session {session_id}: another runner holds the lease now")
            rows = [(session_id, "cursor", encode(commit.cursor))]
            rows += [(session_id, name, encode_row(state)) for name, state in commit.accounts.items()]
            db.executemany("INSERT OR REPLACE INTO state (session, name, value) VALUES (?, ?, ?)", rows)
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO fills (session, id, value) VALUES (?, ?, ?)",
                [(session_id, f.fill_id, encode(f.to_dict())) for f in commit.fills],
            )
            duplicates = len(commit.fills) - (db.total_changes - before)
            db.executemany(
                "INSERT OR IGNORE INTO trades (session, id, value) VALUES (?, ?, ?)",
                [(session_id, t.trade_id, encode(t.to_dict())) for t in commit.trades],
            )
            for table, start, values in (
                ("equity", commit.equity_from, [encode_row(v) for v in commit.equity]),
                ("bars", commit.bars_from, [encode(v) for v in commit.bars]),
            ):
                if values:
                    db.execute(f"DELETE FROM {table} WHERE session = ? AND idx >= ?", (session_id, start))
                    db.executemany(
                        f"INSERT INTO {table} (session, idx, value) VALUES (?, ?, ?)",
                        [(session_id, start + i, v) for i, v in enumerate(values)],
                    )
            return duplicates

    def checkpoint(self, session_id: str) -> Checkpoint | None:
        state = dict(self._rows("SELECT name, value FROM state WHERE session = ?", (session_id,)))
        if "cursor" not in state:
            return None
        bars = self._rows("SELECT value FROM bars WHERE session = ? ORDER BY idx", (session_id,))
        accounts = {k: json.loads(v) for k, v in state.items() if k != "cursor"}
        return Checkpoint(json.loads(state["cursor"]), accounts, [json.loads(b[0]) for b in bars])

    def fills(self, session_id: str) -> list[Fill]:
        rows = self._rows("SELECT value FROM fills WHERE session = ? ORDER BY rowid", (session_id,))
        return [Fill.from_dict(json.loads(r[0])) for r in rows]

    def trades(self, session_id: str) -> list[RoundTrip]:
        rows = self._rows("SELECT value FROM trades WHERE session = ? ORDER BY rowid", (session_id,))
        return [RoundTrip(**json.loads(r[0])) for r in rows]

    def equity(self, session_id: str) -> list[list[Any]]:
        rows = self._rows("SELECT value FROM equity WHERE session = ? ORDER BY idx", (session_id,))
        return [json.loads(r[0]) for r in rows]

    def request_stop(self, session_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE sessions SET stop = ? WHERE id = ?", (time.time(), session_id))

    def stop_requested(self, session_id: str) -> bool:
        rows = self._rows("SELECT stop FROM sessions WHERE id = ?", (session_id,))
        return bool(rows) and rows[0][0] is not None
