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

from backfarm.strategies.base import Param, Params, Rule, Strategy

if TYPE_CHECKING:
    from backfarm.strategies.indicators import Indicators

__all__ = ["BUILTINS", "Breakout", "MaCrossover", "MeanReversion", "Momentum", "Volatility"]

MAX_WINDOW = 5000
"""Upper bound of every window parameter (about 3.5 days of 1-minute bars)."""


@njit(cache=True)
def _mean_reversion(z: np.ndarray, enter_below: float, exit_above: float) -> np.ndarray:  # pragma: no cover
    """Long from the bar z < enter_below until the bar z > exit_above; a NaN z (warm-up, flat window) holds state."""
    n = z.shape[0]
    out = np.zeros(n)
    long = False
    for t in range(n):
        if long:
            if z[t] > exit_above:
                long = False
        elif z[t] < enter_below:
            long = True
        if long:
            out[t] = 1.0
    return out


@njit(cache=True)
def _breakout(close: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Long from close > upper[t-1] until close < lower[t-1]: channels of the previous bars, never bar t's own."""
    n = close.shape[0]
    out = np.zeros(n)
    long = False
    for t in range(1, n):
        if long:
            if close[t] < lower[t - 1]:
                long = False
        elif close[t] > upper[t - 1]:
            long = True
        if long:
            out[t] = 1.0
    return out


@njit(cache=True)
def _volatility(  # pragma: no cover - compiled
    close: np.ndarray, tr: np.ndarray, atr: np.ndarray, sma: np.ndarray, k: float
) -> np.ndarray:
    """Long from an up bar whose true range exceeds k × the previous bar's ATR until close < SMA.

    Entry also needs close ≥ SMA (a bar that would exit at once stays flat) and a defined SMA: a NaN compares false.
    """
    n = close.shape[0]
    out = np.zeros(n)
    long = False
    for t in range(1, n):
        if long:
            if close[t] < sma[t]:
                long = False
        elif tr[t] > k * atr[t - 1] and close[t] > close[t - 1] and close[t] >= sma[t]:
            long = True
        if long:
            out[t] = 1.0
    return out


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
        return (ind.roc(int(p["lookback"])) > float(p["threshold"])).astype(np.float64)


class MeanReversion(Strategy):
    """Mean reversion: the z-score is (close - SMA) / standard deviation over the last `window` bars. Enter long
    when it falls below -`entry_z`; stay long until it rises above -`exit_z` (`exit_z` < `entry_z`, so the exit lies
    above the entry: `exit_z` = 0 exits back at the mean). A flat window has no z-score and leaves the position as
    it is."""

    name: ClassVar[str] = "mean_reversion"
    version: ClassVar[str] = "1"
    params: ClassVar[tuple[Param, ...]] = (
        _window("window", 60, (20, 60, 120, 240), help="bars of the mean and standard deviation"),
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
        return (ind.sma(int(p["fast"])) > ind.sma(int(p["slow"]))).astype(np.float64)


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
