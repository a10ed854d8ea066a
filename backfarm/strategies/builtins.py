"""The five built-in strategies: momentum, mean reversion, Donchian breakout, moving-average crossover, volatility.

Each is long-only: exposure 1 (fully invested) or 0 (flat), decided at bar t's close from bars ≤ t, and 0 while an
indicator it needs is still warming up (NaN). Stateless rules are vectorized comparisons; rules with hysteresis (enter
on one condition, leave on another) are small numba state machines. Default grids are sized for 1-minute bars and
reuse a few indicator windows, because a batch computes each indicator once for all its parameter sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
from numba import njit

from backfarm.core.jobs import Params
from backfarm.strategies.base import Param, Rule, Strategy

if TYPE_CHECKING:
    from backfarm.strategies.indicators import Indicators

__all__ = ["BUILTINS", "Breakout", "MaCrossover", "MeanReversion", "Momentum", "Volatility"]

MAX_WINDOW = 5000
"""Upper bound of every window parameter (about 3.5 days of 1-minute bars)."""


_BLOCK = 64
"""Bars tested at once while scanning for the next entry or exit (see :func:`_scan`)."""

# The rules with hysteresis run as "scan for the next event, fill the stretch": in each state only the one condition
# that can end it is tested, and whole blocks of bars where it cannot fire are skipped by a branch-free test that
# compiles to SIMD (an integer OR over unsigned indices; a boolean reduction, or a signed index that might wrap,
# stays scalar). The outputs are bit-identical to the bar-by-bar state machines they replace (kept in the tests).

_GT, _LT, _GT_PREV, _LT_PREV, _LT_OTHER, _VOL_ENTRY = 0, 1, 2, 3, 4, 5
"""Conditions :func:`_scan` can look for at bar u: a[u] > level, a[u] < level, a[u] > b[u-1], a[u] < c[u-1],
a[u] < b[u], and the volatility entry (c[u] > k·d[u-1], a[u] > a[u-1], a[u] >= b[u] with c = true range, d = ATR)."""


@njit(cache=True, inline="always")
def _hit(
    kind: int, u: np.uint64, a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, level: float
) -> bool:  # pragma: no cover - compiled
    """Whether condition ``kind`` holds at bar ``u`` (unsigned; u >= 1 for the conditions that read bar u-1)."""
    one = np.uint64(1)
    if kind == _GT:
        return bool(a[u] > level)
    if kind == _LT:
        return bool(a[u] < level)
    if kind == _GT_PREV:
        return bool(a[u] > b[u - one])
    if kind == _LT_PREV:
        return bool(a[u] < c[u - one])
    if kind == _LT_OTHER:
        return bool(a[u] < b[u])
    return bool((c[u] > level * d[u - one]) & (a[u] > a[u - one]) & (a[u] >= b[u]))


@njit(cache=True, inline="always")
def _scan(
    kind: int, start: int, a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, level: float
) -> int:  # pragma: no cover - compiled
    """First bar u >= ``start`` where condition ``kind`` holds, or n."""
    n = np.uint64(a.shape[0])
    block = np.uint64(_BLOCK)
    u = np.uint64(start)
    while u + block <= n:
        hits = 0
        for k in range(_BLOCK):
            hits |= _hit(kind, u + np.uint64(k), a, b, c, d, level)
        if hits:
            break
        u += block
    while u < n:
        if _hit(kind, u, a, b, c, d, level):
            return int(u)
        u += np.uint64(1)
    return int(n)


@njit(cache=True, inline="always")
def _latch(
    first: int,
    enter: int,
    leave: int,
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    d: np.ndarray,
    level_in: float,
    level_out: float,
) -> np.ndarray:  # pragma: no cover - compiled
    """1.0 from each bar where ``enter`` holds (while flat) through the bar before ``leave`` holds (while long);
    bars before ``first`` are 0. The bar that triggers an exit is flat, the bar that triggers an entry is long."""
    n = a.shape[0]
    out = np.empty(n)
    out[: min(first, n)] = 0.0
    t = first
    while t < n:
        u = _scan(enter, t, a, b, c, d, level_in)
        out[t:u] = 0.0
        if u >= n:
            break
        v = _scan(leave, u + 1, a, b, c, d, level_out)
        out[u:v] = 1.0
        if v >= n:
            break
        out[v] = 0.0
        t = v + 1
    return out


@njit(cache=True)
def _greater(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """1.0 where a > b, else 0.0 (NaN compares false): ``(a > b).astype(float)`` in one pass, no bool temporary."""
    n = a.shape[0]
    out = np.empty(n)
    for i in range(np.uint64(n)):
        out[i] = 1.0 if a[i] > b[i] else 0.0
    return out


@njit(cache=True)
def _above(a: np.ndarray, level: float) -> np.ndarray:  # pragma: no cover - compiled
    """1.0 where a > level, else 0.0 (NaN compares false)."""
    n = a.shape[0]
    out = np.empty(n)
    for i in range(np.uint64(n)):
        out[i] = 1.0 if a[i] > level else 0.0
    return out


@njit(cache=True)
def _mean_reversion(z: np.ndarray, enter_below: float, exit_above: float) -> np.ndarray:  # pragma: no cover
    """Long from the bar z < enter_below until the bar z > exit_above; a NaN z (warm-up, flat window) holds state."""
    return _latch(0, _LT, _GT, z, z, z, z, enter_below, exit_above)


@njit(cache=True)
def _breakout(close: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Long from close > upper[t-1] until close < lower[t-1]: channels of the previous bars, never bar t's own."""
    return _latch(1, _GT_PREV, _LT_PREV, close, upper, lower, lower, 0.0, 0.0)


@njit(cache=True)
def _volatility(  # pragma: no cover - compiled
    close: np.ndarray, tr: np.ndarray, atr: np.ndarray, sma: np.ndarray, k: float
) -> np.ndarray:
    """Long from an up bar whose true range exceeds k × the previous bar's ATR until close < SMA.

    Entry also needs close ≥ SMA (a bar that would exit at once stays flat) and a defined SMA: a NaN compares false.
    """
    return _latch(1, _VOL_ENTRY, _LT_OTHER, close, sma, tr, atr, k, 0.0)


def _window(name: str, default: int, grid: tuple[int, ...], low: int = 2, help: str = "") -> Param:
    """An integer window parameter in bars, bounded to [low, MAX_WINDOW]."""
    return Param(name, int, default, low, MAX_WINDOW, grid, help)


class Momentum(Strategy):
    """Momentum: long while the rate of change over the last `lookback` bars, close[t] / close[t - lookback] - 1,
    is above `threshold`; flat otherwise (and during the first `lookback` bars)."""

    name: ClassVar[str] = "momentum"
    version: ClassVar[str] = "1"
    params: ClassVar[tuple[Param, ...]] = (
        _window("lookback", 60, (10, 30, 60, 120, 240, 480, 960), low=1, help="bars of the rate of change"),
        Param(
            "threshold",
            float,
            0.001,
            -0.5,
            0.5,
            (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02),
            "minimum rate of change to be long (0.001 = 0.1%)",
        ),
    )

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        return _above(ind.roc(int(p["lookback"])), float(p["threshold"]))


class MeanReversion(Strategy):
    """Mean reversion: the z-score is (close - SMA) / standard deviation over the last `window` bars (the population
    one, ddof = 0: dividing by `window`). Enter long when it falls below -`entry_z`; stay long until it rises above
    -`exit_z` (`exit_z` < `entry_z`, so the exit lies above the entry: `exit_z` = 0 exits back at the mean). A flat
    window has no z-score and leaves the position as it is."""

    name: ClassVar[str] = "mean_reversion"
    version: ClassVar[str] = "1"
    params: ClassVar[tuple[Param, ...]] = (
        _window("window", 60, (20, 60, 120, 240), help="bars of the mean and (population) standard deviation"),
        Param("entry_z", float, 2.0, 0.1, 10.0, (1.5, 2.0, 2.5, 3.0), "enter when z < -entry_z"),
        Param("exit_z", float, 0.0, -10.0, 10.0, (0.0, 0.5, 1.0, 2.0), "exit when z > -exit_z"),
    )
    rules: ClassVar[tuple[Rule, ...]] = (Rule("exit_z < entry_z", lambda p: p["exit_z"] < p["entry_z"]),)

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        z = ind.zscore(int(p["window"]))
        return _mean_reversion(z, -float(p["entry_z"]), -float(p["exit_z"]))


class Breakout(Strategy):
    """Donchian breakout: enter long when the close rises above the highest high of the previous `entry` bars
    (t - entry .. t - 1); exit when the close falls below the lowest low of the previous `exit` bars
    (t - exit .. t - 1), with `exit` <= `entry`. Bar t's own high and low never count toward its own channel."""

    name: ClassVar[str] = "breakout"
    version: ClassVar[str] = "1"
    params: ClassVar[tuple[Param, ...]] = (
        _window("entry", 120, (20, 30, 60, 120, 240, 480, 720, 1440), help="bars of the entry channel (highs)"),
        _window("exit", 60, (10, 15, 20, 30, 60, 120, 240), help="bars of the exit channel (lows)"),
    )
    rules: ClassVar[tuple[Rule, ...]] = (Rule("exit <= entry", lambda p: p["exit"] <= p["entry"]),)

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        return _breakout(ind.close, ind.highest(int(p["entry"])), ind.lowest(int(p["exit"])))


class MaCrossover(Strategy):
    """Moving-average crossover: long while the simple moving average of the last `fast` closes is above that of
    the last `slow` closes (fast < slow); flat otherwise, including while the slow average warms up."""

    name: ClassVar[str] = "ma_crossover"
    version: ClassVar[str] = "1"
    params: ClassVar[tuple[Param, ...]] = (
        _window("fast", 20, (5, 10, 15, 20, 30, 60, 120), low=1, help="bars of the fast average"),
        _window("slow", 120, (20, 30, 60, 120, 240, 480, 960, 1440), help="bars of the slow average"),
    )
    rules: ClassVar[tuple[Rule, ...]] = (Rule("fast < slow", lambda p: p["fast"] < p["slow"]),)

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        return _greater(ind.sma(int(p["fast"])), ind.sma(int(p["slow"])))


class Volatility(Strategy):
    """Volatility-expansion breakout: enter long on an up bar (close above the previous close) whose true range
    exceeds `k` times the average true range (Wilder, `window` bars) as of the previous bar, provided the close is
    not below its `exit_window`-bar simple moving average; exit when the close falls below that average."""

    name: ClassVar[str] = "volatility"
    version: ClassVar[str] = "1"
    params: ClassVar[tuple[Param, ...]] = (
        _window("window", 60, (14, 60, 240), low=1, help="bars of the average true range"),
        Param("k", float, 3.0, 0.1, 50.0, (1.5, 2.0, 2.5, 3.0, 4.0), "true range / ATR multiple that triggers"),
        _window("exit_window", 30, (10, 30, 60, 120), help="bars of the exit moving average"),
    )

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        atr = ind.atr(int(p["window"]))
        sma = ind.sma(int(p["exit_window"]))
        return _volatility(ind.close, ind.true_range(), atr, sma, float(p["k"]))

    def warmup(self, p: Params) -> int:
        # The ATR is first defined at bar `window` and the trigger compares against the previous bar's value.
        return max(int(p["window"]) + 2, int(p["exit_window"]) + 1)


BUILTINS: tuple[type[Strategy], ...] = (Momentum, MeanReversion, Breakout, MaCrossover, Volatility)
"""The seed set; the registry lists strategies by name."""
