"""Where paper sessions live: spec, status, a lease, checkpoints, fills, round trips, equity marks and live bars.

Two stores with one contract: :class:`RedisSessionStore` for the farm (sessions run as Celery tasks and resume on
any worker) and :class:`SQLiteSessionStore` for the embedded path (a local file in the data directory).

Exactly once. A runner owns a session through a **lease** (a token with a time-to-live it keeps renewing). Every
write of the run — checkpoint, new fills, closed round trips, equity marks, live bars — is one atomic **commit**
that first checks the token, so a runner that lost its lease (it was paused, or presumed dead and replaced) can
never write again. Fills are keyed ``{account}:{bar}:{reason}`` and inserted only if absent, and the lists of
equity marks and bars are cut back to the checkpoint's length before they are appended to, so replaying a commit
changes nothing. A resumed session therefore continues from its last commit and records each fill exactly once.

Redis layout (prefix ``backfarm:paper``; see :class:`PaperKeys`): ``sessions`` (zset by creation time),
``{id}:meta`` (hash: spec, status, times, worker, error, final metrics), ``{id}:state`` (hash: ``cursor`` and one
field per account), ``{id}:lease`` (string with a TTL), ``{id}:stop`` (flag), ``{id}:fills`` / ``{id}:trades``
(hash id → JSON) with ``{id}:fill-order`` / ``{id}:trade-order`` (lists), ``{id}:equity`` and ``{id}:bars`` (lists).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backfarm.errors import BackfarmError, ConfigError, ServiceUnavailable, ValidationError
from backfarm.leaderboard.keys import DEFAULT_PREFIX, Keys
from backfarm.leaderboard.sqlite import write_transaction
from backfarm.paper.accounts import Fill, RoundTrip
from backfarm.paper.spec import SessionSpec

# A session's life: queued → running → finished (its duration ended) | stopped (``paper stop``) | failed.
ACTIVE = frozenset({"queued", "running"})
DONE = frozenset({"finished", "stopped", "failed"})
SESSION_FILE = "paper.sqlite"
"""The embedded session store's file in the data directory."""


class LeaseLost(BackfarmError):
    """Another runner owns the session now: this one must stop without writing anything more."""


@dataclass
class Commit:
    """One atomic write of a running session."""

    cursor: dict[str, Any]
    accounts: dict[str, list[float]] = field(default_factory=dict)
    """Account states that changed since the last commit."""
    fills: list[Fill] = field(default_factory=list)
    trades: list[RoundTrip] = field(default_factory=list)
    equity: list[list[Any]] = field(default_factory=list)
    equity_from: int = 0
    """Index the first equity row goes to (rows beyond it from an uncommitted past are dropped)."""
    bars: list[dict[str, Any]] = field(default_factory=list)
    bars_from: int = 0


@dataclass
class Checkpoint:
    """What a resuming runner reads back."""

    cursor: dict[str, Any]
    accounts: dict[str, list[float]]
    bars: list[dict[str, Any]]


@dataclass
class SessionInfo:
    """A session as ``paper status`` shows it."""

    spec: SessionSpec
    status: str
    created_at: float
    updated_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    worker: str = ""
    resumes: int = 0
    error: str = ""
    cursor: dict[str, Any] | None = None
    accounts: dict[str, list[float]] = field(default_factory=dict)
    lease_alive: bool = False
    stop_requested: bool = False
    final: dict[str, Any] | None = None
    """Each account's metrics, written when the session ended."""

    @property
    def session_id(self) -> str:
        """The session's id."""
        return self.spec.session_id

    @property
    def orphaned(self) -> bool:
        """Running, but nobody holds its lease: its worker died (a paper worker will resume it)."""
        return self.status == "running" and not self.lease_alive

    @property
    def display_status(self) -> str:
        """The status as listed: ``orphaned`` for a running session whose worker died."""
        return "orphaned" if self.orphaned else self.status

    @property
    def bars_done(self) -> int:
        """Bars every symbol has completed (the slowest symbol's count; 0 before the first checkpoint)."""
        done = (self.cursor or {}).get("bars_done") or {}
        return min((int(v) for v in done.values()), default=0)


class SessionStore(ABC):
    """The contract both stores implement (see the module docstring for the guarantees)."""

    @abstractmethod
    def create(self, spec: SessionSpec) -> None:
        """Store a new session as ``queued``."""

    @abstractmethod
    def get(self, session_id: str) -> SessionInfo | None:
        """The session with its status and latest checkpoint cursor, or ``None``."""

    @abstractmethod
    def session_ids(self) -> list[str]:
        """Every session id, newest first."""

    @abstractmethod
    def active_ids(self) -> list[str]:
        """Ids of the sessions still queued or running."""

    @abstractmethod
    def update(self, session_id: str, **fields: Any) -> None:
        """Set meta fields: ``status``, ``worker``, ``error``, ``started_at``, ``finished_at``, ``final``, …"""

    @abstractmethod
    def bump_resumes(self, session_id: str) -> int:
        """Count one more resume; returns the new count."""

    @abstractmethod
    def acquire(self, session_id: str, token: str, ttl_s: float) -> bool:
        """Take the lease if it is free or already ``token``'s; True on success."""

    @abstractmethod
    def renew(self, session_id: str, token: str, ttl_s: float) -> bool:
        """Extend ``token``'s lease; False when it is no longer ``token``'s."""

    @abstractmethod
    def release(self, session_id: str, token: str) -> None:
        """Give the lease up (only if it is still ``token``'s)."""

    @abstractmethod
    def lease_alive(self, session_id: str) -> bool:
        """Someone holds the lease right now."""

    @abstractmethod
    def commit(self, session_id: str, token: str, commit: Commit) -> int:
        """Apply ``commit`` atomically if ``token`` holds the lease (else ``LeaseLost``); returns duplicate fills."""

    @abstractmethod
    def checkpoint(self, session_id: str) -> Checkpoint | None:
        """The last committed state, or ``None`` before the first commit."""

    @abstractmethod
    def fills(self, session_id: str) -> list[Fill]:
        """Every fill, in the order recorded."""

    @abstractmethod
    def trades(self, session_id: str) -> list[RoundTrip]:
        """Every closed round trip, in the order closed."""

    @abstractmethod
    def equity(self, session_id: str) -> list[list[Any]]:
        """Equity rows ``[symbol index, bar, ts, equity of each of the symbol's accounts...]``, in order."""

    @abstractmethod
    def request_stop(self, session_id: str) -> None:
        """Ask the runner to end the session gracefully."""

    @abstractmethod
    def stop_requested(self, session_id: str) -> bool:
        """A stop was requested."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resolve(self, given: str) -> str:
        """A full session id from an id or a unique prefix of one."""
        ids = self.session_ids()
        if given in ids:
            return given
        matches = [sid for sid in ids if sid.startswith(given)] if given else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValidationError(f"session id prefix '{given}' is ambiguous ({', '.join(matches[:5])})")
        raise ValidationError(f"no paper session '{given}' (see `backfarm paper status`)")

    def sessions(self) -> list[SessionInfo]:
        """Every session, newest first."""
        return [info for sid in self.session_ids() if (info := self.get(sid)) is not None]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _number(value: float | int) -> str:
    """A number as JSON (``repr`` round-trips floats exactly; JSON spells the non-finite ones out)."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _row(values: list[Any]) -> str:
    """A flat list of numbers as JSON, several times faster than ``json.dumps`` (one per account and bar)."""
    return "[" + ",".join(map(_number, values)) + "]"


# --- Redis -------------------------------------------------------------------------------------------------------


class PaperKeys(Keys):
    """Key names of paper sessions, under the result store's prefix (``{prefix}:paper:...``)."""

    @property
    def sessions(self) -> str:
        """Zset of session ids by creation time."""
        return self._key("paper", "sessions")

    @property
    def active(self) -> str:
        """Set of the sessions not yet finished, stopped or failed (what the orphan watchdog scans)."""
        return self._key("paper", "active")

    def of(self, session_id: str, part: str) -> str:
        """A per-session key: ``meta``, ``state``, ``lease``, ``stop``, ``fills``, ``fill-order``, ``trades``,
        ``trade-order``, ``equity``, ``bars``, ``requeue``."""
        return self._key("paper", session_id, part)


# KEYS: lease, state, fills, fill-order, trades, trade-order, equity, bars, meta
# ARGV: token, now, cursor, then counted groups: accounts (name, json)*, fills (id, json)*, trades (id, json)*,
#       equity (from, rows*), bars (from, rows*)
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[2], 'cursor', ARGV[3])
local i = 4
local n = tonumber(ARGV[i]); i = i + 1
for k = 1, n do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2 end
local dup = 0
for g = 0, 1 do
  n = tonumber(ARGV[i]); i = i + 1
  for k = 1, n do
    if redis.call('HSETNX', KEYS[3 + 2 * g], ARGV[i], ARGV[i + 1]) == 1 then
      redis.call('RPUSH', KEYS[4 + 2 * g], ARGV[i])
    elseif g == 0 then
      dup = dup + 1
    end
    i = i + 2
  end
end
for g = 0, 1 do
  local key = KEYS[7 + g]
  local from = tonumber(ARGV[i]); n = tonumber(ARGV[i + 1]); i = i + 2
  if n > 0 then
    if from == 0 then redis.call('DEL', key)
    elseif redis.call('LLEN', key) > from then redis.call('LTRIM', key, 0, from - 1) end
    for s = i, i + n - 1, 1000 do
      redis.call('RPUSH', key, unpack(ARGV, s, math.min(s + 999, i + n - 1)))
    end
    i = i + n
  end
end
redis.call('HSET', KEYS[9], 'updated_at', ARGV[2])
return dup
"""

# KEYS: lease; ARGV: token, ttl ms. Renew only our own lease.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: lease; ARGV: token, ttl ms. Take a free lease, or keep our own.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisSessionStore(SessionStore):
    """Sessions in Redis, for the farm."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        from backfarm.leaderboard.redis_store import RedisStore

        self._owner = RedisStore(url, prefix)  # one connection set-up, error mapping and ping for both stores
        self.client = self._owner.client
        self.keys = PaperKeys(prefix)
        self._commit = self.client.register_script(_COMMIT)
        self._renew = self.client.register_script(_RENEW)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._release = self.client.register_script(_RELEASE)

    def close(self) -> None:
        self._owner.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ServiceUnavailable(f"lost Redis: {type(exc).__name__}: {exc}") from None

    def _k(self, session_id: str, part: str) -> str:
        return self.keys.of(session_id, part)

    def create(self, spec: SessionSpec) -> None:
        sid = spec.session_id
        with self._guard():
            pipe = self.client.pipeline(transaction=True)
            meta: dict[Any, Any] = {
                "spec": _dumps(spec.to_dict()),
                "status": "queued",
                "created_at": repr(spec.created_at),
            }
            pipe.hset(self._k(sid, "meta"), mapping=meta)
            pipe.zadd(self.keys.sessions, {sid: spec.created_at})
            pipe.sadd(self.keys.active, sid)
            pipe.execute()

    def get(self, session_id: str) -> SessionInfo | None:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self._k(session_id, "meta"))
            pipe.hgetall(self._k(session_id, "state"))
            pipe.exists(self._k(session_id, "lease"))
            pipe.exists(self._k(session_id, "stop"))
            meta, state, lease, stop = pipe.execute()
        if not meta or "spec" not in meta:
            return None
        return _info(meta, state, bool(lease), bool(stop))

    def session_ids(self) -> list[str]:
        with self._guard():
            return [str(sid) for sid in self.client.zrevrange(self.keys.sessions, 0, -1)]

    def update(self, session_id: str, **fields: Any) -> None:
        values: dict[Any, Any] = {k: v if isinstance(v, str) else _dumps(v) for k, v in fields.items()}
        values["updated_at"] = repr(time.time())
        with self._guard():
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self._k(session_id, "meta"), mapping=values)
            if fields.get("status") in DONE:
                pipe.srem(self.keys.active, session_id)
            pipe.execute()

    def active_ids(self) -> list[str]:
        with self._guard():
            return sorted(str(sid) for sid in self.client.smembers(self.keys.active))

    def bump_resumes(self, session_id: str) -> int:
        with self._guard():
            return int(self.client.hincrby(self._k(session_id, "meta"), "resumes", 1))

    def acquire(self, session_id: str, token: str, ttl_s: float) -> bool:
        with self._guard():
            return bool(self._acquire(keys=[self._k(session_id, "lease")], args=[token, int(ttl_s * 1000)]))

    def renew(self, session_id: str, token: str, ttl_s: float) -> bool:
        with self._guard():
            return bool(self._renew(keys=[self._k(session_id, "lease")], args=[token, int(ttl_s * 1000)]))

    def release(self, session_id: str, token: str) -> None:
        with self._guard():
            self._release(keys=[self._k(session_id, "lease")], args=[token])

    def lease_alive(self, session_id: str) -> bool:
        with self._guard():
            return bool(self.client.exists(self._k(session_id, "lease")))

    def commit(self, session_id: str, token: str, commit: Commit) -> int:
        parts = ("lease", "state", "fills", "fill-order", "trades", "trade-order", "equity", "bars", "meta")
        args: list[Any] = [token, repr(time.time()), _dumps(commit.cursor), len(commit.accounts)]
        for name, state in commit.accounts.items():
            args += [name, _row(state)]
        for items in (commit.fills, commit.trades):
            args.append(len(items))
            for item in items:
                args += [item.fill_id if isinstance(item, Fill) else item.trade_id, _dumps(item.to_dict())]
        args += [commit.equity_from, len(commit.equity), *(_row(row) for row in commit.equity)]
        args += [commit.bars_from, len(commit.bars), *(_dumps(row) for row in commit.bars)]
        with self._guard():
            result = int(self._commit(keys=[self._k(session_id, p) for p in parts], args=args))
        if result < 0:
            raise LeaseLost(f"session {session_id}: another runner holds the lease now")
        return result

    def checkpoint(self, session_id: str) -> Checkpoint | None:
        with self._guard():
            state = self.client.hgetall(self._k(session_id, "state"))
            bars = self.client.lrange(self._k(session_id, "bars"), 0, -1)
        if "cursor" not in state:
            return None
        accounts = {str(k): json.loads(v) for k, v in state.items() if k != "cursor"}
        return Checkpoint(json.loads(state["cursor"]), accounts, [json.loads(b) for b in bars])

    def _ordered(self, session_id: str, table: str, order: str) -> list[dict[str, Any]]:
        with self._guard():
            ids = self.client.lrange(self._k(session_id, order), 0, -1)
            values = self.client.hmget(self._k(session_id, table), ids) if ids else []
        return [json.loads(v) for v in values if v is not None]

    def fills(self, session_id: str) -> list[Fill]:
        return [Fill.from_dict(d) for d in self._ordered(session_id, "fills", "fill-order")]

    def trades(self, session_id: str) -> list[RoundTrip]:
        return [RoundTrip(**d) for d in self._ordered(session_id, "trades", "trade-order")]

    def equity(self, session_id: str) -> list[list[Any]]:
        with self._guard():
            return [json.loads(row) for row in self.client.lrange(self._k(session_id, "equity"), 0, -1)]

    def request_stop(self, session_id: str) -> None:
        with self._guard():
            self.client.set(self._k(session_id, "stop"), repr(time.time()))

    def stop_requested(self, session_id: str) -> bool:
        with self._guard():
            return bool(self.client.exists(self._k(session_id, "stop")))

    def claim_requeue(self, session_id: str, ttl_s: float) -> bool:
        """True for the one caller that may re-enqueue an orphaned session now (others back off ``ttl_s``)."""
        with self._guard():
            return bool(self.client.set(self._k(session_id, "requeue"), "1", nx=True, px=int(ttl_s * 1000)))


def _info(meta: dict[str, str], state: dict[str, str], lease: bool, stop: bool) -> SessionInfo:
    """A ``SessionInfo`` from the stored strings."""

    def num(name: str) -> float:
        return float(meta.get(name) or 0.0)

    cursor = json.loads(state["cursor"]) if "cursor" in state else None
    accounts = {k: json.loads(v) for k, v in state.items() if k != "cursor"}
    return SessionInfo(
        spec=SessionSpec.from_dict(json.loads(meta["spec"])),
        status=meta.get("status", "queued"),
        created_at=num("created_at"),
        updated_at=num("updated_at"),
        started_at=num("started_at"),
        finished_at=num("finished_at"),
        worker=meta.get("worker", ""),
        resumes=int(num("resumes")),
        error=meta.get("error", ""),
        cursor=cursor,
        accounts=accounts,
        lease_alive=lease,
        stop_requested=stop,
        final=json.loads(meta["final"]) if meta.get("final") else None,
    )


# --- SQLite ------------------------------------------------------------------------------------------------------

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
                (spec.session_id, spec.created_at, _dumps(meta)),
            )

    def get(self, session_id: str) -> SessionInfo | None:
        rows = self._rows("SELECT meta, lease, lease_until, stop FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            return None
        meta_text, lease, until, stop = rows[0]
        meta = json.loads(meta_text)
        state = dict(self._rows("SELECT name, value FROM state WHERE session = ?", (session_id,)))
        alive = lease is not None and (until or 0.0) > time.time()
        strings = {k: v if isinstance(v, str) else _dumps(v) for k, v in meta.items() if k != "spec"}
        strings["spec"] = _dumps(meta["spec"])
        return _info(strings, state, alive, stop is not None)

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
            db.execute("UPDATE sessions SET meta = ? WHERE id = ?", (_dumps(meta), session_id))

    def bump_resumes(self, session_id: str) -> int:
        with self._tx() as db:
            meta = json.loads(db.execute("SELECT meta FROM sessions WHERE id = ?", (session_id,)).fetchone()[0])
            meta["resumes"] = int(meta.get("resumes", 0)) + 1
            db.execute("UPDATE sessions SET meta = ? WHERE id = ?", (_dumps(meta), session_id))
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
            rows = [(session_id, "cursor", _dumps(commit.cursor))]
            rows += [(session_id, name, _row(state)) for name, state in commit.accounts.items()]
            db.executemany("INSERT OR REPLACE INTO state (session, name, value) VALUES (?, ?, ?)", rows)
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO fills (session, id, value) VALUES (?, ?, ?)",
                [(session_id, f.fill_id, _dumps(f.to_dict())) for f in commit.fills],
            )
            duplicates = len(commit.fills) - (db.total_changes - before)
            db.executemany(
                "INSERT OR IGNORE INTO trades (session, id, value) VALUES (?, ?, ?)",
                [(session_id, t.trade_id, _dumps(t.to_dict())) for t in commit.trades],
            )
            for table, start, values in (
                ("equity", commit.equity_from, [_row(v) for v in commit.equity]),
                ("bars", commit.bars_from, [_dumps(v) for v in commit.bars]),
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


def open_session_store(settings: Any) -> SessionStore:
    """Redis when the settings name a Redis URL, else ``{data_dir}/paper.sqlite``."""
    if settings.redis_url:
        return RedisSessionStore(settings.redis_url)
    return SQLiteSessionStore(Path(settings.data_dir) / SESSION_FILE)
