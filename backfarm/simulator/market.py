"""The simulator's market: a product catalogue and deterministic prices, candles and quotes.

Every value is a pure function of (product, time): the same bucket has the same candle whichever window or page
asks for it, so paged fetches, refetches and resumed fetches agree exactly. The built-in :class:`FormulaMarket`
prices follow a log-price made of slow sinusoids (trend and daily cycle) plus multi-scale hashed value noise
(intraday chop); :class:`SourceMarket` serves any ``CandleSource`` (e.g. the synthetic source) instead, fetching in
fixed, epoch-aligned blocks so its answers are window-independent too.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from backfarm._util.time import NS_PER_SECOND
from backfarm.candles.sources.synthetic import SyntheticSource
from backfarm.core.candles import GRANULARITIES

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class SimProduct:
    """One product in the simulator's catalogue."""

    product_id: str
    base_name: str
    price: float
    """Typical price level (the formula market oscillates around it)."""
    quote_increment: str
    base_increment: str
    listed: int
    """UNIX seconds of the first candle."""
    alias_of: str | None = None
    """For ``-USDC`` books unified with ``-USD`` (same data)."""

    @property
    def base(self) -> str:
        """Base currency."""
        return self.product_id.split("-")[0]

    @property
    def quote(self) -> str:
        """Quote currency."""
        return self.product_id.split("-")[1]

    @property
    def data_id(self) -> str:
        """The product whose data this one serves (itself, or the USD book for a USDC alias)."""
        return self.alias_of or self.product_id

    @property
    def decimals(self) -> int:
        """Digits of the quote increment (prices are rounded to it)."""
        return len(self.quote_increment.split(".")[1]) if "." in self.quote_increment else 0


def _ts(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


PRODUCTS: tuple[SimProduct, ...] = (
    SimProduct("BTC-USD", "Bitcoin", 68000.0, "0.01", "0.00000001", _ts(2015, 1, 1)),
    SimProduct("ETH-USD", "Ethereum", 3500.0, "0.01", "0.00000001", _ts(2016, 5, 18)),
    SimProduct("SOL-USD", "Solana", 150.0, "0.01", "0.001", _ts(2021, 6, 17)),
    SimProduct("LINK-USD", "Chainlink", 15.0, "0.001", "0.01", _ts(2019, 6, 27)),
    SimProduct("POL-USD", "POL (ex-MATIC)", 0.40, "0.0001", "0.1", _ts(2024, 9, 4)),
    SimProduct("ETH-BTC", "Ethereum", 0.05, "0.00001", "0.00000001", _ts(2016, 5, 18)),
    SimProduct("BTC-EUR", "Bitcoin", 63000.0, "0.01", "0.00000001", _ts(2015, 4, 23)),
    SimProduct("BTC-USDC", "Bitcoin", 68000.0, "0.01", "0.00000001", _ts(2015, 1, 1), alias_of="BTC-USD"),
    SimProduct("ETH-USDC", "Ethereum", 3500.0, "0.01", "0.00000001", _ts(2016, 5, 18), alias_of="ETH-USD"),
)
"""Seed symbols plus a few more; MATIC-USD is absent (retired; POL-USD replaced it)."""


class MarketData(Protocol):
    """Where the simulator's candles and prices come from."""

    def candles(self, product: SimProduct, granularity: int, first: int, last: int, now: float) -> Arrays:
        """Buckets whose open time ``s`` has ``first ≤ s ≤ last`` and ``s ≤ now``: ``ts`` in UNIX *seconds*."""
        ...

    def price_at(self, product: SimProduct, t: float) -> float:
        """The traded price at UNIX time ``t``."""
        ...


# ------------------------------------------------------------------------------------------- hashing utilities

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, vectorised: a fast, well-mixed hash of uint64s (wrap-around is intended)."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def uniform_hash(seed: int, keys: np.ndarray) -> np.ndarray:
    """Deterministic uniforms in [0, 1) for integer keys under ``seed``."""
    mixed = _splitmix(np.asarray(keys, dtype=np.int64).view(np.uint64) ^ _splitmix(np.array([seed], np.uint64)))
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def product_seed(product_id: str, seed: int = 0) -> int:
    """A stable 63-bit seed per product (Python's ``hash`` is salted per process, so not that)."""
    value = seed & 0x7FFFFFFF
    for ch in product_id.encode():
        value = (value * 1_000_003 + ch) & 0x7FFFFFFFFFFFFFFF
    return value


# ----------------------------------------------------------------------------------------------- formula market

_WAVES = ((30 * 86400.0, 0.10), (7 * 86400.0, 0.05), (86400.0, 0.012), (4 * 3600.0, 0.006))
"""(period s, amplitude of log price): trend-like swings and a daily cycle."""
_NOISE = ((6 * 3600.0, 0.02), (3600.0, 0.006), (600.0, 0.0025), (60.0, 0.0009), (10.0, 0.0003))
"""(knot spacing s, amplitude): value noise, linearly interpolated between hashed knots."""


class FormulaMarket:
    """Closed-form deterministic prices: ``price(t) = level · exp(waves(t) + noise(t))``."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def log_return(self, product: SimProduct, t: np.ndarray) -> np.ndarray:
        """log(price / level) at times ``t`` (float seconds)."""
        ps = product_seed(product.data_id, self.seed)
        x = np.zeros_like(t, dtype=np.float64)
        for i, (period, amp) in enumerate(_WAVES):
            phase = 2 * math.pi * float(uniform_hash(ps, np.array([i]))[0])
            x += amp * np.sin(2 * math.pi * t / period + phase)
        for i, (spacing, amp) in enumerate(_NOISE):
            knot = np.floor(t / spacing)
            frac = t / spacing - knot
            k = knot.astype(np.int64)
            sub = ps + 7919 * (i + 1)
            left = uniform_hash(sub, k) * 2 - 1
            right = uniform_hash(sub, k + 1) * 2 - 1
            x += amp * (left + (right - left) * frac)
        return x

    def prices(self, product: SimProduct, t: np.ndarray) -> np.ndarray:
        """Prices at times ``t`` (unrounded)."""
        return product.price * np.exp(self.log_return(product, np.asarray(t, dtype=np.float64)))

    def price_at(self, product: SimProduct, t: float) -> float:
        """The price at one instant, rounded to the product's quote increment."""
        return round(float(self.prices(product, np.array([t]))[0]), product.decimals)

    def candles(self, product: SimProduct, granularity: int, first: int, last: int, now: float) -> Arrays:
        """Bucket OHLCV from price samples inside each bucket; the open bucket only sees prices up to ``now``."""
        first = max(first, -(-product.listed // granularity) * granularity)
        last = min(last, math.floor(now))
        starts = np.arange(first - first % granularity, last + 1, granularity, dtype=np.int64)
        starts = starts[starts >= first]
        if len(starts) == 0:
            return {k: np.empty(0, np.int64 if k == "ts" else np.float64) for k in ("ts", *_OHLCV)}
        n_samples = int(min(max(granularity // 60, 4), 48))
        frac = np.linspace(0.0, 1.0, n_samples + 1)
        ends = np.minimum(starts + granularity, now).astype(np.float64)
        times = starts[:, None] + (ends - starts)[:, None] * frac[None, :]
        path = self.prices(product, times.ravel()).reshape(times.shape)
        ps = product_seed(product.data_id, self.seed)
        wick = uniform_hash(ps + 1, starts) * 0.0004 * math.sqrt(granularity / 60.0)
        vol_u = uniform_hash(ps + 2, starts)
        open_share = (ends - starts) / granularity
        dp = product.decimals
        out: Arrays = {"ts": starts}
        out["open"] = np.round(path[:, 0], dp)
        out["close"] = np.round(path[:, -1], dp)
        out["high"] = np.maximum(np.round(path.max(axis=1) * (1 + wick), dp), np.maximum(out["open"], out["close"]))
        out["low"] = np.minimum(np.round(path.min(axis=1) * (1 - wick), dp), np.minimum(out["open"], out["close"]))
        base_volume = 400_000.0 / product.price  # roughly $400k per minute
        out["volume"] = np.round(base_volume * (0.3 + 1.4 * vol_u) * (granularity / 60.0) * open_share, 8)
        return out


_OHLCV = ("open", "high", "low", "close", "volume")


# ------------------------------------------------------------------------------------------------ source market


class SourceMarket:
    """Serves a ``CandleSource`` (``fetch(symbol, granularity, start, end)``) in epoch-aligned blocks of buckets.

    Quotes interpolate linearly inside the 1-minute candle holding the instant (open → close).
    """

    BLOCK = 1000

    def __init__(self, source: object, cache_blocks: int = 256) -> None:
        self.source = source
        self._cache: OrderedDict[tuple[str, int, int], Arrays] = OrderedDict()
        self._size = cache_blocks
        self._lock = threading.Lock()

    def _block(self, product_id: str, granularity: int, index: int) -> Arrays:
        key = (product_id, granularity, index)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        name = next(n for n, s in GRANULARITIES.items() if s == granularity)
        span = self.BLOCK * granularity
        start = datetime.fromtimestamp(index * span, UTC)
        end = datetime.fromtimestamp((index + 1) * span, UTC)
        raw = self.source.fetch(product_id, name, start, end)  # type: ignore[attr-defined]
        block = {"ts": np.asarray(raw["ts"], dtype=np.int64) // NS_PER_SECOND}
        block.update({c: np.asarray(raw[c], dtype=np.float64) for c in _OHLCV})
        with self._lock:
            self._cache[key] = block
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return block

    def candles(self, product: SimProduct, granularity: int, first: int, last: int, now: float) -> Arrays:
        """Buckets in ``[first, last]`` (and open before ``now``) from the blocks that cover them."""
        first = max(first, -(-product.listed // granularity) * granularity)
        last = min(last, math.floor(now))
        span = self.BLOCK * granularity
        parts = [self._block(product.data_id, granularity, i) for i in range(first // span, last // span + 1)]
        if not parts or first > last:
            return {k: np.empty(0, np.int64 if k == "ts" else np.float64) for k in ("ts", *_OHLCV)}
        merged = {k: np.concatenate([p[k] for p in parts]) for k in ("ts", *_OHLCV)}
        keep = (merged["ts"] >= first) & (merged["ts"] <= last)
        return {k: v[keep] for k, v in merged.items()}

    def price_at(self, product: SimProduct, t: float) -> float:
        """Open→close interpolation inside the finest candle holding ``t`` (1m if the source has it, else coarser;
        the last close before ``t`` when the bucket is absent; the catalogue level when there is nothing)."""
        for granularity in sorted(GRANULARITIES.values()):
            bucket = math.floor(t) - math.floor(t) % granularity
            bars = self.candles(product, granularity, bucket - 60 * granularity, bucket, t)
            if len(bars["ts"]) == 0:
                continue
            if bars["ts"][-1] != bucket:
                return round(float(bars["close"][-1]), product.decimals)
            share = (t - bucket) / granularity
            price = bars["open"][-1] + (bars["close"][-1] - bars["open"][-1]) * share
            return round(float(price), product.decimals)
        return product.price


def default_market(seed: int = 0) -> MarketData:
    """The synthetic source's candles (window-independent, realistic), or the formula market without it.

    The synthetic source only returns closed bars; its clock is set far ahead so the open bar is served too (the
    simulator itself hides bars that open after its own "now"), as Coinbase does.
    """
    far = datetime(2099, 12, 1, tzinfo=UTC)
    return SourceMarket(SyntheticSource(seed, clock=lambda: far))
