"""The ``synthetic`` source: seeded, deterministic, realistic-looking candles for offline use and tests.

Two layers make the output independent of the requested range:

1. A daily *anchor* path per (symbol, seed): the log price at every UTC midnight from 2017-01-01 to 2100-01-01,
   built once with a regime-switching model (ranging stretches that pull back to a level, trending stretches with
   a drift), GARCH(1,1) volatility and Student-t shocks, weakly pulled back to the symbol's reference price.
2. Per UTC month and granularity, intraday bars from a seed derived from (symbol, granularity, seed, month): a
   GARCH-scaled Student-t walk (mean-reverting on ranging days) with a time-of-day volatility profile, bridged so
   that every day opens exactly at its anchor. Months therefore join seamlessly, and every granularity of one symbol
   has the same daily opens and closes.

High and low are drawn from the exact distribution of a Brownian bridge's maximum and minimum, so they always
enclose open and close; volume grows with the bar's absolute return. The open of a bar equals the previous close.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
from numba import njit

from backfarm._util.time import NS_PER_SECOND, to_ns, utc_now
from backfarm.candles.cache import empty_arrays
from backfarm.core.candles import check_symbol, granularity_seconds
from backfarm.errors import ValidationError

HISTORY_START = datetime(2017, 1, 1, tzinfo=UTC)
"""Every synthetic symbol's history starts here."""
HISTORY_END = datetime(2100, 1, 1, tzinfo=UTC)


_DAY_NS = 86400 * NS_PER_SECOND
_START_NS = to_ns(HISTORY_START)
_END_NS = to_ns(HISTORY_END)
_N_DAYS = (_END_NS - _START_NS) // _DAY_NS

# Daily anchor model. Regimes: 0 ranging, 1 trending up, 2 trending down.
_RANGE_DAYS = 30.0  # mean length of a ranging stretch
_TREND_DAYS = 25.0  # mean length of a trend
_TREND_DRIFT = 0.30  # daily drift of a trend, in daily standard deviations
_RANGE_PULL = 0.15  # daily pull back to the level where the range started
_GLOBAL_PULL = 1.0 / 365.0  # daily pull to the reference price: keeps decades of history at plausible levels
_TREND_VOL, _RANGE_VOL = 1.15, 0.85
_DAILY_ALPHA, _DAILY_BETA, _DAILY_DF = 0.10, 0.86, 4.0

# Intraday model.
_INTRA_ALPHA = 0.05
_INTRA_HALFLIFE_S = 4 * 3600.0  # half-life of intraday volatility shocks
_INTRA_DF = 5.0
_G_CAP = 30.0
_RANGE_TAU_S = 3 * 3600.0  # time constant of the intraday mean reversion on ranging days
_SEASON_AMP = 0.30  # time-of-day volatility swing, peaking at 15:00 UTC (US hours)

# base asset → (reference price in USD, annual volatility, daily USD volume)
_ASSETS: dict[str, tuple[float, float, float]] = {
    "BTC": (40_000.0, 0.55, 1.5e9),
    "ETH": (2_500.0, 0.72, 8e8),
    "SOL": (100.0, 0.95, 3e8),
    "LINK": (15.0, 0.90, 6e7),
    "POL": (0.5, 0.95, 2e7),
    "MATIC": (0.8, 0.95, 3e7),
    "DOGE": (0.10, 1.00, 1.5e8),
    "ADA": (0.5, 0.85, 5e7),
    "XRP": (0.6, 0.80, 2e8),
    "AVAX": (30.0, 0.95, 6e7),
    "LTC": (80.0, 0.75, 5e7),
    "DOT": (7.0, 0.90, 3e7),
    "BCH": (300.0, 0.80, 3e7),
    "UNI": (8.0, 0.95, 2e7),
    "ATOM": (9.0, 0.90, 2e7),
    "XLM": (0.12, 0.80, 1e7),
    "SHIB": (0.00002, 1.10, 3e7),
    "USDT": (1.0, 0.02, 1e8),
    "USDC": (1.0, 0.02, 1e8),
}
# quote asset → (USD per unit of quote, volatility multiplier: a crypto quote removes the common market factor)
_QUOTES: dict[str, tuple[float, float]] = {
    "USD": (1.0, 1.0),
    "USDC": (1.0, 1.0),
    "USDT": (1.0, 1.0),
    "EUR": (1.08, 1.0),
    "GBP": (1.27, 1.0),
    "BTC": (40_000.0, 0.6),
    "ETH": (2_500.0, 0.6),
}


@dataclass(frozen=True)
class Profile:
    """Per-symbol constants: reference price (in the quote currency), annual volatility, daily volume in quote."""

    price: float
    annual_vol: float
    daily_quote_volume: float


def profile(symbol: str) -> Profile:
    """The price, volatility and volume of a symbol: from the tables, or derived from a hash of the name."""
    base, quote = symbol.split("-", 1)
    u = _unit_hash(symbol)
    if base in _ASSETS:
        usd, vol, usd_volume = _ASSETS[base]
    else:
        usd, vol, usd_volume = 10.0 ** (5.0 * u[0] - 2.0), 0.7 + 0.6 * u[1], 10.0 ** (6.0 + 2.0 * u[2])
    if quote in _QUOTES:
        quote_usd, vol_mult = _QUOTES[quote]
    else:
        quote_usd, vol_mult = 10.0 ** (2.0 * u[3] - 1.0), 1.0
    return Profile(usd / quote_usd, max(vol * vol_mult, 0.01), usd_volume / quote_usd)


class SyntheticSource:
    """Generated candles for any ``BASE-QUOTE`` symbol since 2017-01-01; deterministic per (symbol, granularity,
    seed) and independent of the requested range. Only closed bars (open time + bar length <= now) are returned."""

    name = "synthetic"
    can_fetch = True

    def __init__(self, seed: int = 0, *, clock: Callable[[], datetime] | None = None) -> None:
        self.seed = int(seed)
        self._clock = clock or utc_now

    def validate_symbol(self, symbol: str) -> None:
        """Any ``BASE-QUOTE`` name in capitals and digits (``BTC-USD``, ``FOO1-EUR``) is known."""
        check_symbol(symbol, self.name)

    def first_available(self, symbol: str, granularity: str) -> datetime:
        """The first bar's open time: 2017-01-01 UTC for every symbol and granularity."""
        return HISTORY_START

    def fetch(self, symbol: str, granularity: str, start: datetime, end: datetime) -> dict[str, np.ndarray]:
        """Closed bars whose open time is in ``[start, end)``: ``ts`` int64 ns UTC and float64 OHLCV."""
        self.validate_symbol(symbol)
        step = granularity_seconds(granularity) * NS_PER_SECOND
        lo = max(to_ns(start), _START_NS)
        hi = min(to_ns(end), to_ns(self._clock()) - step + 1)  # bar open + length <= now
        if hi > _END_NS:
            raise ValidationError(f"the synthetic source ends at {HISTORY_END:%Y-%m-%d}")
        if lo >= hi:
            return empty_arrays()
        first = np.datetime64(lo, "ns").astype("datetime64[M]")
        last = np.datetime64(hi - 1, "ns").astype("datetime64[M]")
        parts = [month_bars(symbol, granularity, self.seed, m) for m in np.arange(first, last + 1)]
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        ts = cols["ts"]
        i, j = np.searchsorted(ts, [lo, hi])
        return {k: v[i:j].copy() for k, v in cols.items()}


# --- generation -------------------------------------------------------------------------------------------------


def month_bars(symbol: str, granularity: str, seed: int, month: np.datetime64) -> dict[str, np.ndarray]:
    """All bars of one UTC month (closed or not), generated from the month's own seed and the daily anchors."""
    gran_s = granularity_seconds(granularity)
    anchor = _anchor(symbol, seed)
    month_ns = int(month.astype("datetime64[ns]").astype(np.int64))
    day0 = (month_ns - _START_NS) // _DAY_NS
    n_days = int(((month + 1).astype("datetime64[D]") - month.astype("datetime64[D]")).astype(np.int64))
    per_day = 86400 // gran_s
    n = n_days * per_day
    rng = np.random.default_rng(_seed_int(f"month|{symbol}|{granularity}|{seed}|{month}"))
    z = rng.standard_t(_INTRA_DF, n) * math.sqrt((_INTRA_DF - 2.0) / _INTRA_DF)
    u_high, u_low = 1.0 - rng.random(n), 1.0 - rng.random(n)  # in (0, 1]: safe for log
    volume_noise = rng.standard_normal(n)

    logp = anchor.logp[day0 : day0 + n_days + 1]
    ranging = np.repeat(anchor.regime[day0 : day0 + n_days] == 0, per_day)
    ts = month_ns + np.arange(n, dtype=np.int64) * (gran_s * NS_PER_SECOND)
    season = _season(ts, gran_s)
    sig_base = np.repeat(anchor.sigma[day0 : day0 + n_days] / math.sqrt(per_day), per_day) * season
    phi, scale = _reversion(ranging, gran_s)
    beta = max(0.5 ** (gran_s / _INTRA_HALFLIFE_S) - _INTRA_ALPHA, 0.0)
    walk, sig = _intraday_walk(z, sig_base, phi, scale, _INTRA_ALPHA, beta, per_day)

    bounds = _bridge(walk.reshape(n_days, per_day), logp)
    ret = np.diff(bounds)
    sig_eff = sig * scale
    return _ohlcv(ts, bounds, ret, sig_eff, u_high, u_low, volume_noise, season, symbol, gran_s)


def _bridge(walk: np.ndarray, logp: np.ndarray) -> np.ndarray:
    """Log prices at the n+1 bar boundaries of the month: each day's walk pinned to its two anchors."""
    n_days, per_day = walk.shape
    frac = np.arange(1, per_day + 1) / per_day
    pinned = walk - frac * walk[:, -1:] + frac * (logp[1:] - logp[:-1])[:, None]
    bounds = np.empty(n_days * per_day + 1)
    grid = bounds[:-1].reshape(n_days, per_day)
    grid[:, 0] = logp[:-1]  # exact anchors at midnight: months and granularities agree there
    grid[:, 1:] = logp[:-1, None] + pinned[:, :-1]
    bounds[-1] = logp[-1]
    return bounds


def _ohlcv(
    ts: np.ndarray,
    bounds: np.ndarray,
    ret: np.ndarray,
    sig: np.ndarray,
    u_high: np.ndarray,
    u_low: np.ndarray,
    volume_noise: np.ndarray,
    season: np.ndarray,
    symbol: str,
    gran_s: int,
) -> dict[str, np.ndarray]:
    """Bars from boundary log prices; high/low from the Brownian-bridge extreme distribution."""
    var = sig * sig
    up = 0.5 * (ret + np.sqrt(ret * ret - 2.0 * var * np.log(u_high)))
    down = 0.5 * (ret - np.sqrt(ret * ret - 2.0 * var * np.log(u_low)))
    prices = np.exp(bounds)
    open_, close = prices[:-1], prices[1:]
    high = np.maximum(np.exp(bounds[:-1] + up), np.maximum(open_, close))
    low = np.minimum(np.exp(bounds[:-1] + down), np.minimum(open_, close))
    quote_per_bar = profile(symbol).daily_quote_volume * gran_s / 86400.0
    activity = 0.35 + 0.65 * np.abs(ret) / np.maximum(sig, 1e-12)
    weekday = (ts // _DAY_NS + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    weekend = np.where(weekday >= 5, 0.7, 1.0)
    volume = quote_per_bar / close * season * weekend * activity * np.exp(0.4 * volume_noise - 0.08)
    return {"ts": ts, "open": open_.copy(), "high": high, "low": low, "close": close.copy(), "volume": volume}


def _season(ts: np.ndarray, gran_s: int) -> np.ndarray:
    """Time-of-day volatility factor at each bar's midpoint (mean square 1 over a day; 1 for daily bars)."""
    if gran_s >= 86400:
        return np.ones(ts.shape[0])
    hour = ((ts // NS_PER_SECOND + gran_s // 2) % 86400) / 3600.0
    return (1.0 + _SEASON_AMP * np.cos(2.0 * np.pi * (hour - 15.0) / 24.0)) / math.sqrt(1.0 + _SEASON_AMP**2 / 2.0)


def _reversion(ranging: np.ndarray, gran_s: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-bar AR coefficient and shock scale: a random walk on trending days, an OU process on ranging days."""
    phi_r = math.exp(-gran_s / _RANGE_TAU_S)
    # Exact OU discretisation: stationary variance of the walk equals that of a random walk run for tau/2.
    scale_r = math.sqrt(_RANGE_TAU_S / (2.0 * gran_s) * (1.0 - phi_r * phi_r))
    return np.where(ranging, phi_r, 1.0), np.where(ranging, scale_r, 1.0)


@njit(cache=True)
def _intraday_walk(z, sig_base, phi, scale, alpha, beta, per_day):
    """GARCH(1,1)-scaled shocks accumulated into a per-day walk (reset at midnight); returns walk and bar sigma."""
    n = z.shape[0]
    walk = np.empty(n)
    sig = np.empty(n)
    g = 1.0
    s = 0.0
    omega = 1.0 - alpha - beta
    for k in range(n):
        if k % per_day == 0:
            s = 0.0
        sk = sig_base[k] * math.sqrt(g)
        s = phi[k] * s + scale[k] * sk * z[k]
        walk[k] = s
        sig[k] = sk
        g = min(omega + alpha * z[k] * z[k] * g + beta * g, _G_CAP)
    return walk, sig


# --- daily anchors ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Anchor:
    logp: np.ndarray  # log price at each UTC midnight, _N_DAYS + 1 values
    sigma: np.ndarray  # daily volatility of each day
    regime: np.ndarray  # 0 ranging, 1 up, 2 down


@lru_cache(maxsize=64)
def _anchor(symbol: str, seed: int) -> _Anchor:
    """The fixed daily path of one (symbol, seed): always the full 2017–2100 span, so it never depends on a range."""
    prof = profile(symbol)
    sigma_d = prof.annual_vol / math.sqrt(365.0)
    rng = np.random.default_rng(_seed_int(f"anchor|{symbol}|{seed}"))
    z = rng.standard_t(_DAILY_DF, _N_DAYS) * math.sqrt((_DAILY_DF - 2.0) / _DAILY_DF)
    u_switch, u_pick = rng.random(_N_DAYS), rng.random(_N_DAYS)
    log_ref = math.log(prof.price)
    log_start = log_ref + (rng.random() - 0.5)
    logp, sigma, regime = _anchor_path(z, u_switch, u_pick, log_start, log_ref, sigma_d)
    for arr in (logp, sigma, regime):
        arr.flags.writeable = False
    return _Anchor(logp, sigma, regime)


@njit(cache=True)
def _anchor_path(z, u_switch, u_pick, log_start, log_ref, sigma_d):
    """Regime-switching GARCH(1,1) daily log prices with Student-t shocks."""
    n = z.shape[0]
    logp = np.empty(n + 1)
    sigma = np.empty(n)
    regime = np.empty(n, np.int8)
    logp[0] = log_start
    h = sigma_d * sigma_d
    omega = h * (1.0 - _DAILY_ALPHA - _DAILY_BETA)
    r = 0
    level = log_start
    for t in range(n):
        if r == 0 and u_switch[t] < 1.0 / _RANGE_DAYS:
            r = 1 if u_pick[t] < 0.5 else 2
        elif r != 0 and u_switch[t] < 1.0 / _TREND_DAYS:
            r = 0
            level = logp[t]
        mult = _RANGE_VOL if r == 0 else _TREND_VOL
        sig = math.sqrt(h) * mult
        if r == 0:
            drift = -_RANGE_PULL * (logp[t] - level)
        else:
            drift = _TREND_DRIFT * sigma_d if r == 1 else -_TREND_DRIFT * sigma_d
        drift -= _GLOBAL_PULL * (logp[t] - log_ref)
        eps = math.sqrt(h) * z[t]
        logp[t + 1] = logp[t] + drift + mult * eps
        sigma[t] = sig
        regime[t] = r
        h = min(max(omega + _DAILY_ALPHA * eps * eps + _DAILY_BETA * h, 0.09 * sigma_d**2), 16.0 * sigma_d**2)
    return logp, sigma, regime


def _seed_int(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest(), "little")


def _unit_hash(key: str) -> list[float]:
    """Four stable numbers in [0, 1) from a name."""
    digest = hashlib.blake2b(f"profile|{key}".encode(), digest_size=16).digest()
    return [int.from_bytes(digest[i : i + 4], "little") / 2**32 for i in range(0, 16, 4)]
