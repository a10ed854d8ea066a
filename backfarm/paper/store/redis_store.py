"""Paper sessions in Redis, for the farm: sessions run as Celery tasks and resume on any worker from their checkpoint.

Redis layout (prefix ``backfarm:paper``; see :class:`PaperKeys`): ``sessions`` (zset by creation time),
``{id}:meta`` (hash: spec, status, times, worker, error, final metrics), ``{id}:state`` (hash: ``cursor`` and one
field per account), ``{id}:lease`` (string with a TTL), ``{id}:stop`` (flag), ``{id}:fills`` / ``{id}:trades``
(hash id → JSON) with ``{id}:fill-order`` / ``{id}:trade-order`` (lists), ``{id}:equity`` and ``{id}:bars`` (lists).
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from typing import Any

from backfarm._util.connection import RedisConnection
from backfarm._util.keys import DEFAULT_PREFIX, KeySpace
from backfarm.paper.accounts import Fill, RoundTrip
from backfarm.paper.spec import SessionSpec
from backfarm.paper.store.base import (
    DONE,
    Checkpoint,
    Commit,
    LeaseLost,
    SessionInfo,
    SessionStore,
    encode,
    encode_row,
    session_info,
)


class PaperKeys(KeySpace):
    """Key names of paper sessions, under the result store's prefix (``{prefix}:paper:...``)."""

    @property
    def sessions(self) -> str:
        """Zset of session ids by creation time."""
        return self.key("paper", "sessions")

    @property
    def active(self) -> str:
        """Set of the sessions not yet finished, stopped or failed (what the orphan watchdog scans)."""
        return self.key("paper", "active")

    def of(self, session_id: str, part: str) -> str:
        """A per-session key: ``meta``, ``state``, ``lease``, ``stop``, ``fills``, ``fill-order``, ``trades``,
        ``trade-order``, ``equity``, ``bars``, ``requeue``."""
        return self.key("paper", session_id, part)


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

    def __init__(self, conn: RedisConnection | str, prefix: str = DEFAULT_PREFIX) -> None:
        self.conn, self._owns = RedisConnection.of(conn)
        self.client = self.conn.client
        self.keys = PaperKeys(prefix)
        self._commit = self.client.register_script(_COMMIT)
        self._renew = self.client.register_script(_RENEW)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._release = self.client.register_script(_RELEASE)

    def close(self) -> None:
        """Close the connection pool, if this store opened it."""
        if self._owns:
            self.conn.close()

    def _guard(self) -> AbstractContextManager[None]:
        return self.conn.guard()

    def _k(self, session_id: str, part: str) -> str:
        return self.keys.of(session_id, part)

    def create(self, spec: SessionSpec) -> None:
        sid = spec.session_id
        with self._guard():
            pipe = self.client.pipeline(transaction=True)
            meta: dict[Any, Any] = {
                "spec": encode(spec.to_dict()),
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
        return session_info(meta, state, bool(lease), bool(stop))

    def session_ids(self) -> list[str]:
        with self._guard():
            return [str(sid) for sid in self.client.zrevrange(self.keys.sessions, 0, -1)]

    def update(self, session_id: str, **fields: Any) -> None:
        values: dict[Any, Any] = {k: v if isinstance(v, str) else encode(v) for k, v in fields.items()}
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
        args: list[Any] = [token, repr(time.time()), encode(commit.cursor), len(commit.accounts)]
        for name, state in commit.accounts.items():
            args += [name, encode_row(state)]
        for items in (commit.fills, commit.trades):
            args.append(len(items))
            for item in items:
                args += [item.fill_id if isinstance(item, Fill) else item.trade_id, encode(item.to_dict())]
        args += [commit.equity_from, len(commit.equity), *(encode_row(row) for row in commit.equity)]
        args += [commit.bars_from, len(commit.bars), *(encode(row) for row in commit.bars)]
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
