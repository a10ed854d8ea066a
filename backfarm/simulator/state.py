"""The simulator's configuration, fault switches and shared state (read by the REST and WebSocket handlers).

Faults are plain mutable fields so a test can flip them while the server runs (the server thread reads them per
request or per message; list pops are atomic under the GIL).
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backfarm.simulator.keys import KeyRegistry
from backfarm.simulator.market import PRODUCTS, MarketData, SimProduct, default_market, product_seed, uniform_hash


@dataclass
class SimConfig:
    """How the simulator behaves when nothing is broken."""

    host: str = "127.0.0.1"
    port: int = 0
    """REST (and WebSocket) port; 0 picks a free one."""
    ws_port: int | None = None
    """An extra port for the WebSocket feed (the REST port serves it too)."""
    public_rate: float | None = 10.0
    """Public requests per second per client IP (token bucket of that size); ``None`` disables the limit."""
    private_rate: float | None = 30.0
    """Authenticated requests per second per key."""
    candle_cap: int = 300
    """Most buckets one candles request may span (more → 400 INVALID_ARGUMENT)."""
    end_inclusive: bool = True
    """Whether a bucket opening exactly at ``end`` is returned (Coinbase's choice is undocumented)."""
    tick_interval: float = 0.25
    """Seconds between ticker updates (per product, when its quote changed)."""
    heartbeat_interval: float = 1.0
    """Seconds between heartbeats."""
    subscribe_deadline: float = 5.0
    """A WebSocket without a subscribe message by then is closed."""
    speed: float = 1.0
    """Simulated time runs this many times faster than the wall clock (from start-up)."""
    start_time: float | None = None
    """Simulated UNIX time at start-up (replay history from there); ``None`` = now."""
    seed: int = 0


@dataclass
class Faults:
    """Switches for fault injection. REST faults apply to paths containing ``only_paths`` (all when empty)."""

    statuses: list[int] = field(default_factory=list)
    """The next REST requests are answered with these statuses, one each (429, 500, 502, 503, …)."""
    retry_after: float | None = None
    """``Retry-After`` seconds on forced 429/503 answers (absent when ``None``, as Coinbase documents none)."""
    error_rate: float = 0.0
    """Share of REST requests answered 503 at random (seeded)."""
    latency: float = 0.0
    """Seconds added to every REST answer."""
    delays: list[float] = field(default_factory=list)
    """Extra seconds for the next REST requests, one each (slow answers → client timeouts)."""
    only_paths: str = ""
    omit_buckets: set[int] = field(default_factory=set)
    """Candle open times (UNIX seconds) that have no candle (no trades)."""
    omit_rate: float = 0.0
    """Deterministic share of candle buckets that are absent."""
    body_429: str = "json"
    """``json`` or ``html`` (a gateway page, as seen on the wire)."""
    ws_connections: int | None = None
    """WebSocket faults apply to this many connections from now on (``None``: every connection)."""
    ws_drop_after: int | None = None
    """Abruptly drop the connection after this many data messages."""
    ws_skip_after: int | None = None
    """Skip one sequence number after this many messages (a gap the client must notice)."""
    ws_silent_after: int | None = None
    """Stop sending (socket stays open) after this many messages: a stale feed."""

    def fail_next(self, *statuses: int, retry_after: float | None = None) -> None:
        """Answer the next requests with ``statuses``."""
        self.retry_after = retry_after
        self.statuses.extend(statuses)

    def take_ws_fault_slot(self) -> bool:
        """Whether a new connection gets the WebSocket faults (consumes one of ``ws_connections``)."""
        if self.ws_connections is None:
            return True
        if self.ws_connections > 0:
            self.ws_connections -= 1
            return True
        return False


@dataclass
class RequestRecord:
    """One REST request as the simulator saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    at: float
    """``time.monotonic()`` when it arrived."""
    key: str | None = None


class TokenBucket:
    """``rate`` tokens per second, holding at most ``rate`` (so bursts up to one second's worth)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take a token: 0 when granted, else seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class SimState:
    """Everything the handlers share."""

    def __init__(self, config: SimConfig, faults: Faults, market: MarketData | None = None) -> None:
        self.config = config
        self.faults = faults
        self.market: MarketData = market if market is not None else default_market(config.seed)
        self.keys = KeyRegistry()
        self.products: dict[str, SimProduct] = {p.product_id: p for p in PRODUCTS}
        self.requests: list[RequestRecord] = []
        self.buckets: dict[tuple[str, str], TokenBucket] = {}
        self.rng = random.Random(config.seed)
        self.ws_connections = 0
        self.lock = threading.Lock()
        self._wall0 = time.time()
        self._sim0 = self._wall0 if config.start_time is None else config.start_time

    def now(self) -> float:
        """Simulated UNIX time: ``start_time`` (default now) plus wall-clock time since start-up × ``speed``."""
        return self._sim0 + (time.time() - self._wall0) * self.config.speed

    def rate_limited(self, scope: str, who: str) -> float:
        """0 when the request may proceed, else the seconds until it could (the caller answers 429)."""
        rate = self.config.public_rate if scope == "public" else self.config.private_rate
        if rate is None:
            return 0.0
        with self.lock:
            bucket = self.buckets.setdefault((scope, who), TokenBucket(rate))
            return bucket.take()

    def omitted(self, product: SimProduct, ts: np.ndarray) -> np.ndarray:
        """Mask of buckets that have no candle (fault switches)."""
        mask = np.isin(ts, np.fromiter(self.faults.omit_buckets, dtype=np.int64, count=len(self.faults.omit_buckets)))
        if self.faults.omit_rate > 0:
            mask |= uniform_hash(self.config.seed + 99, ts) < self.faults.omit_rate
        return mask

    def quote(self, product: SimProduct, t: float) -> dict[str, Any]:
        """Top of book at simulated time ``t``: last price, bid/ask one spread apart, hashed sizes."""
        last = self.market.price_at(product, t)
        tick = 10.0**-product.decimals
        half = max(tick, round(last * 0.00001, product.decimals))
        bid = round(last - half, product.decimals)
        ask = round(bid + max(2 * half, tick), product.decimals)
        step = math.floor(t * 10)
        u = uniform_hash(product_seed(product.data_id, self.config.seed) + 7, np.array([2 * step, 2 * step + 1]))
        scale = 20000.0 / max(last, 1e-9)
        return {
            "last": last,
            "bid": bid,
            "ask": ask,
            "bid_size": round(float(0.05 + u[0]) * scale, 8),
            "ask_size": round(float(0.05 + u[1]) * scale, 8),
            "tick": tick,
        }
