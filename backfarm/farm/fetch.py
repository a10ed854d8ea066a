"""Candle fetches on the farm: one fetch of a partition at a time in the whole cluster, within Coinbase's limits.

Two pieces of shared state live in Redis (DESIGN §3, §7):

- a **lock per partition** (source, symbol, granularity, month), held while that month is fetched, so two workers —
  on one machine or many — never fetch the same partition at once; the second one waits, then finds it fresh in a
  shared cache (or fetches its own copy once the first is done, on a machine with its own disk);
- a **cluster-wide rate limit** per Coinbase scope (public 10 req/s, private 30 req/s): a GCRA slot counter advanced by
  a Lua script on Redis' own clock, so every worker draws from one budget and host clock skew does not matter.

The ``data`` queue task (:mod:`backfarm.farm.tasks.data`) fetches a window ahead of the backtests (the farm executor
enqueues it for remote sources); the batch task calls :func:`ensure_window` itself too, so a batch never depends on
that task having run first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import redis

from backfarm._util.connection import RedisConnection
from backfarm._util.time import parse_iso, to_ns
from backfarm.candles.cache import month_key
from backfarm.candles.load import FetchReport, ensure_cached
from backfarm.candles.sources import get_source
from backfarm.candles.sources.base import CandleSource
from backfarm.candles.sources.coinbase import CoinbaseSource
from backfarm.coinbase.ratelimit import DEFAULT_RATES, MAX_SLOWDOWN, RECOVERY_S
from backfarm.core.jobs import DataKey
from backfarm.errors import RateLimited
from backfarm.farm.keys import FarmKeys
from backfarm.farm.lifecycle import WorkerContext

log = logging.getLogger(__name__)

REMOTE_SOURCES = frozenset({"coinbase"})
"""Sources that fetch over the network: only these take the cluster lock and the shared rate limit."""
LOCK_WAIT_S = 120.0
"""Longest wait for another worker's fetch of the same partition before giving up (and retrying later)."""

# KEYS[1]: the scope's next free slot (µs on Redis' clock), KEYS[2]: its slowdown (hash, see _SLOW_DOWN); ARGV[1]:
# interval between calls in µs at full speed, ARGV[2]: the time in which a slowdown halves (µs).
# Returns how long the caller must wait for the slot it just booked (µs).
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now, nxt)
local f = tonumber(redis.call('HGET', KEYS[2], 'factor') or '1')
local at = tonumber(redis.call('HGET', KEYS[2], 'at') or '0')
f = math.max(1, f * 0.5 ^ (math.max(now - at, 0) / tonumber(ARGV[2])))
local interval = math.floor(tonumber(ARGV[1]) * f)
redis.call('SET', KEYS[1], string.format('%d', slot + interval), 'PX', math.ceil((slot + interval - now) / 1000) + 1000)
return slot - now
"""


# KEYS[1]: the scope's next free slot, KEYS[2]: its slowdown (hash: factor, at µs); ARGV[1]: seconds to hold every
# call back (µs), ARGV[2]: the most a slowdown reaches, ARGV[3]: the time in which a slowdown halves (µs). A 429
# anywhere in the farm slows the whole farm down (see backfarm.coinbase.ratelimit).
_SLOW_DOWN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local f = tonumber(redis.call('HGET', KEYS[2], 'factor') or '1')
local at = tonumber(redis.call('HGET', KEYS[2], 'at') or '0')
f = math.max(1, f * 0.5 ^ (math.max(now - at, 0) / tonumber(ARGV[3])))
f = math.min(tonumber(ARGV[2]), 2 * f)
redis.call('HSET', KEYS[2], 'factor', tostring(f), 'at', string.format('%d', now))
redis.call('PEXPIRE', KEYS[2], math.ceil(tonumber(ARGV[3]) / 1000) * 10)
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
local hold = now + tonumber(ARGV[1])
if hold > nxt then
  redis.call('SET', KEYS[1], string.format('%d', hold), 'PX', math.ceil((hold - now) / 1000) + 1000)
end
return tostring(f)
"""


class RedisRateLimiter:
    """A :class:`~backfarm.coinbase.ratelimit.RateLimiter` shared by every worker through Redis."""

    def __init__(self, conn: RedisConnection, keys: FarmKeys, rates: Mapping[str, float] | None = None) -> None:
        self.rates = dict(DEFAULT_RATES if rates is None else rates)
        self._conn = conn
        self._keys = keys
        self._script = conn.client.register_script(_GCRA)
        self._slow_down = conn.client.register_script(_SLOW_DOWN)

    def __repr__(self) -> str:
        return f"RedisRateLimiter({self.rates!r})"

    def reserve(self, scope: str) -> float:
        """Book the next cluster-wide slot in ``scope`` (spaced by the rate, slowed by the farm's 429s); returns the
        seconds to wait for it."""
        interval_us = int(1_000_000 / self.rates[scope])
        keys = [self._keys.rate(scope), self._keys.slowdown(scope)]
        with self._conn.guard():
            wait_us = int(self._script(keys=keys, args=[interval_us, int(RECOVERY_S * 1_000_000)]))
        return max(0.0, wait_us / 1_000_000)

    def slow_down(self, scope: str, seconds: float) -> float:
        """A 429 on some worker: hold every worker's calls in ``scope`` back for ``seconds`` and halve the farm's rate;
        returns the slowdown now in force."""
        keys = [self._keys.rate(scope), self._keys.slowdown(scope)]
        args = [int(max(seconds, 0.0) * 1_000_000), MAX_SLOWDOWN, int(RECOVERY_S * 1_000_000)]
        with self._conn.guard():
            return float(self._slow_down(keys=keys, args=args))

    def acquire(self, scope: str) -> None:
        """Wait for, and take, one request slot in ``scope``."""
        wait = self.reserve(scope)
        if wait > 0:
            time.sleep(wait)


class ClusterLockedSource:
    """A candle source whose fetches hold the partition's cluster-wide lock (everything else is delegated)."""

    def __init__(self, inner: CandleSource, conn: RedisConnection, keys: FarmKeys, lock_ttl_s: float) -> None:
        self._inner = inner
        self._conn = conn
        self._keys = keys
        self._ttl = lock_ttl_s
        self.name: str = inner.name
        self.can_fetch: bool = inner.can_fetch

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    def validate_symbol(self, symbol: str) -> None:
        """Delegated."""
        self._inner.validate_symbol(symbol)

    def lock_name(self, symbol: str, granularity: str, start: datetime) -> str:
        """The lock of the partition (month) that ``start`` falls in."""
        return self._keys.lock(f"candles:{self.name}:{symbol}:{granularity}:{month_key(to_ns(start))}")

    def fetch(self, symbol: str, granularity: str, start: datetime, end: datetime, **kwargs: Any) -> Any:
        """Fetch one month (the cache fetches month by month) while holding its lock."""
        lock = self._conn.client.lock(
            self.lock_name(symbol, granularity, start), timeout=self._ttl, blocking_timeout=LOCK_WAIT_S
        )
        with self._conn.guard():
            acquired = lock.acquire()
        if not acquired:
            raise RateLimited(f"another worker has been fetching {symbol} {granularity} for {LOCK_WAIT_S:.0f} s")
        try:
            return self._inner.fetch(symbol, granularity, start, end, **kwargs)
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("the fetch of %s %s outlived its lock", symbol, granularity)


def cluster_source(ctx: WorkerContext, name: str) -> CandleSource:
    """This process's locked, cluster-rate-limited source ``name`` (built once per process, kept in ``ctx``)."""
    if name not in ctx.sources:
        keys = ctx.ledger.keys
        if name == "coinbase":
            limiter = RedisRateLimiter(ctx.conn, keys)
            inner: CandleSource = CoinbaseSource.from_settings(ctx.settings, limiter=limiter)
        else:
            inner = get_source(name, ctx.settings)
        ctx.sources[name] = ClusterLockedSource(inner, ctx.conn, keys, lock_ttl_s=ctx.settings.task_time_limit_s)
    return ctx.sources[name]


def fetch_window(ctx: WorkerContext, data_key: DataKey) -> FetchReport:
    """Bring the cache up to date for (source, symbol, granularity, start, end) under the cluster lock and limit."""
    source, symbol, granularity, start, end = data_key
    src = cluster_source(ctx, source)
    report = ensure_cached(ctx.settings, src, symbol, granularity, parse_iso(start), parse_iso(end))
    ctx.checked[data_key] = time.monotonic()
    return report


def ensure_window(ctx: WorkerContext, data_key: DataKey) -> None:
    """Before a batch runs: fetch its window if the source is remote and this process has not checked it lately."""
    if data_key[0] not in REMOTE_SOURCES:
        return  # generated or imported candles: the loader reads (or generates) them locally
    checked = ctx.checked.get(data_key)
    if checked is not None and time.monotonic() - checked < ctx.settings.open_month_ttl_s:
        return
    fetch_window(ctx, data_key)
