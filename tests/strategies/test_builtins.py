"""The built-in strategies: metadata, rules, grids, and each rule on hand-crafted candles."""

from __future__ import annotations

import numpy as np
import pytest

from backfarm.core.candles import Candles
from backfarm.core.jobs import Params
from backfarm.errors import ValidationError
from backfarm.strategies.base import Strategy
from backfarm.strategies.builtins import BUILTINS, Breakout, MaCrossover, MeanReversion, Momentum, Volatility
from backfarm.strategies.indicators import Indicators
from tests.strategies.candles import make_candles

SYMBOLS = 5


def random_candles(n: int = 2000, seed: int = 11) -> Candles:
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 2e-3, n)))
    prev = np.r_[close[:1], close[:-1]]
    high = np.maximum(prev, close) * (1 + rng.uniform(0, 2e-3, n))
    low = np.minimum(prev, close) * (1 - rng.uniform(0, 2e-3, n))
    return make_candles(close, high, low)


def run(strategy: type[Strategy], candles: Candles, **given: object) -> np.ndarray:
    return strategy().exposure(Indicators(candles), strategy.resolve(given))


def long_bars(exposure: np.ndarray) -> list[int]:
    return [int(t) for t in np.flatnonzero(exposure)]


# --- metadata, rules and grids -----------------------------------------------------------------------------------


def test_names_versions_and_descriptions() -> None:
    names = [cls.name for cls in BUILTINS]
    assert names == ["momentum", "mean_reversion", "breakout", "ma_crossover", "volatility"]
    for cls in BUILTINS:
        assert cls.version == "1"
        text = cls.describe()
        assert len(text) > 80 and "\n" not in text, cls.name
        for p in cls.params:
            assert p.name in text, (cls.name, p.name)  # the paragraph explains every parameter
    # Which standard deviation: the population one, as Indicators.stdev computes it (test_indicators pins √(2/3)).
    assert "population one, ddof = 0" in MeanReversion.describe()


@pytest.mark.parametrize("cls", BUILTINS, ids=lambda c: c.name)
def test_defaults_and_grid_are_valid(cls: type[Strategy]) -> None:
    defaults = cls.resolve()
    assert defaults == {p.name: p.default for p in cls.params}
    for p in cls.params:
        assert p.low <= p.default <= p.high and all(p.low <= v <= p.high for v in p.grid), p.name
        assert all(isinstance(v, p.kind) for v in (p.default, *p.grid)), p.name
        if p.kind is int:
            assert p.high == 5000 and p.low in (1, 2)
    grid = list(cls.default_grid())
    assert 45 <= len(grid) <= 60
    assert all(cls.resolve(p) == p for p in grid)
    assert len({tuple(sorted(p.items())) for p in grid}) == len(grid)


def test_grids_make_enough_jobs() -> None:
    sizes = {cls.name: len(list(cls.default_grid())) for cls in BUILTINS}
    assert sizes == {"momentum": 49, "mean_reversion": 56, "breakout": 46, "ma_crossover": 46, "volatility": 60}
    assert sum(sizes.values()) * SYMBOLS >= 1100


@pytest.mark.parametrize("cls", BUILTINS, ids=lambda c: c.name)
def test_grid_shares_a_modest_number_of_indicators(cls: type[Strategy]) -> None:
    ind = Indicators(random_candles(300))
    strategy = cls()
    for p in cls.default_grid():
        strategy.exposure(ind, p)
    assert len(ind._cache) <= 16


@pytest.mark.parametrize(
    ("cls", "given", "rule"),
    [
        (MaCrossover, {"fast": 50, "slow": 20}, "fast < slow"),
        (MaCrossover, {"fast": 20, "slow": 20}, "fast < slow"),
        (MeanReversion, {"entry_z": 2.0, "exit_z": 2.5}, "exit_z < entry_z"),
        (Breakout, {"entry": 50, "exit": 100}, "exit <= entry"),
    ],
)
def test_rules_reject_invalid_combinations(cls: type[Strategy], given: dict, rule: str) -> None:
    with pytest.raises(ValidationError, match=f"{cls.name}: parameters break the rule '{rule}'"):
        cls.resolve(given)


def test_bounds_are_enforced() -> None:
    with pytest.raises(ValidationError, match=r"momentum:lookback=0 is outside \[1, 5000\]"):
        Momentum.resolve({"lookback": 0})
    with pytest.raises(ValidationError, match=r"mean_reversion:window=1 is outside \[2, 5000\]"):
        MeanReversion.resolve({"window": 1})


# --- output contract on random data ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", BUILTINS, ids=lambda c: c.name)
def test_output_contract(cls: type[Strategy]) -> None:
    candles = random_candles()
    ind = Indicators(candles)
    strategy = cls()
    grid = list(cls.default_grid())
    for p in [cls.resolve(), *grid[:: max(1, len(grid) // 6)]]:
        out = strategy.exposure(ind, p)
        assert out.dtype == np.float64 and out.shape == (len(candles),)
        assert set(np.unique(out)) <= {0.0, 1.0}
        assert not out[: strategy.warmup(p) - 2].any(), p  # flat while indicators warm up
    assert any(strategy.exposure(ind, p).any() for p in grid)  # the grid trades at all on a random walk


def hysteresis(enter: np.ndarray, leave: np.ndarray) -> np.ndarray:
    """Reference latch: flat → long on `enter`, long → flat on `leave`."""
    out, long = np.zeros(enter.size), False
    for t in range(enter.size):
        long = not leave[t] if long else bool(enter[t])
        out[t] = float(long)
    return out


@pytest.mark.parametrize(
    "p", [{"window": 20, "entry_z": 1.5, "exit_z": 0.0}, {"window": 60, "entry_z": 2.5, "exit_z": 1.0}]
)
def test_mean_reversion_matches_reference_latch(p: Params) -> None:
    ind = Indicators(random_candles())
    z = ind.zscore(p["window"])
    with np.errstate(invalid="ignore"):
        expected = hysteresis(z < -p["entry_z"], z > -p["exit_z"])
    assert np.array_equal(MeanReversion().exposure(ind, MeanReversion.resolve(p)), expected)


def test_breakout_matches_reference_latch() -> None:
    ind = Indicators(random_candles())
    upper = np.r_[np.nan, ind.highest(60)[:-1]]
    lower = np.r_[np.nan, ind.lowest(30)[:-1]]
    with np.errstate(invalid="ignore"):
        expected = hysteresis(ind.close > upper, ind.close < lower)
    assert np.array_equal(Breakout().exposure(ind, {"entry": 60, "exit": 30}), expected)


# --- each rule on hand-crafted candles ---------------------------------------------------------------------------


def test_momentum_rule() -> None:
    close = [100.0] * 10 + [101.5625] * 10  # +1/64 at bar 10, exactly representable
    out = run(Momentum, make_candles(close), lookback=5, threshold=0.005)
    assert long_bars(out) == [10, 11, 12, 13, 14]  # roc(5) = 1/64 from bar 10 until bar 15 compares equal closes
    assert long_bars(run(Momentum, make_candles(close), lookback=5, threshold=0.015625)) == []  # strictly above


def test_mean_reversion_rule() -> None:
    # window 4: alternating 100/101 gives z = ±1; the dip to 98 at bar 8 gives z = -2/sqrt(1.5) = -1.63;
    # bar 9 (99) z = -0.5/sqrt(1.25) = -0.45; bar 10 (100) z = +0.45.
    close = [100.0, 101.0] * 4 + [98.0, 99.0, 100.0, 101.0, 100.0, 101.0]
    candles = make_candles(close)
    assert long_bars(run(MeanReversion, candles, window=4, entry_z=1.5, exit_z=0.0)) == [8, 9]  # exit at z > 0
    assert long_bars(run(MeanReversion, candles, window=4, entry_z=1.5, exit_z=0.5)) == [8]  # exit at z > -0.5
    assert long_bars(run(MeanReversion, candles, window=4, entry_z=1.7, exit_z=0.0)) == []  # -1.63 is not < -1.7


def test_mean_reversion_holds_through_flat_windows() -> None:
    close = [100.0, 101.0] * 4 + [98.0] + [98.0] * 6 + [99.0]
    out = run(MeanReversion, make_candles(close), window=4, entry_z=1.5, exit_z=0.0)
    # From bar 11 the window is flat (no z-score): the position is held, not closed; bar 15 (99) has z > 0: exit.
    assert long_bars(out) == list(range(8, 15))


def breakout_candles(breakout_close: float) -> Candles:
    close = [100.0] * 50 + [breakout_close] + [101.5] * 19 + [100.5, 100.5]
    high = [101.0] * 50 + [102.0] + [102.0] * 19 + [101.0, 101.0]
    low = [99.0] * 50 + [101.0] + [101.0] * 19 + [100.0, 100.0]
    return make_candles(close, high, low)


def test_breakout_enters_and_exits_on_previous_channels() -> None:
    out = run(Breakout, breakout_candles(101.5), entry=20, exit=10)
    # Bar 50 closes at 101.5 above the previous 20 highs (101) — below its own high (102), so a channel that
    # included bar t would never trigger. Bar 70 closes at 100.5 below the previous 10 lows (101): exit.
    assert long_bars(out) == list(range(50, 70))


def test_breakout_needs_a_close_strictly_above_the_channel() -> None:
    assert long_bars(run(Breakout, breakout_candles(101.0), entry=20, exit=10)) == []


def test_ma_crossover_rule() -> None:
    close = [100.0] * 30 + [101.0, 102.0, 103.0] + [100.0] * 10
    out = run(MaCrossover, make_candles(close), fast=2, slow=5)
    # sma2 vs sma5: bar 30 100.5 > 100.2, 31 101.5 > 100.6, 32 102.5 > 101.2, 33 101.5 > 101.2, 34 100 < 101.2
    assert long_bars(out) == [30, 31, 32, 33]


def volatility_candles(spike_close: float, spike_high: float, spike_low: float) -> Candles:
    close = [100.0] * 20 + [spike_close] + [spike_close] * 9 + [spike_close - 3.0] * 2
    high = [101.0] * 20 + [spike_high] + [spike_close + 1.0] * 9 + [spike_close - 2.0] * 2
    low = [99.0] * 20 + [spike_low] + [spike_close - 1.0] * 9 + [spike_close - 4.0] * 2
    return make_candles(close, high, low)


def test_volatility_rule() -> None:
    candles = volatility_candles(106.0, 107.0, 100.0)
    # True range 2 on every quiet bar, so ATR(5) = 2 at bar 19; bar 20's range is 7 > 3 × 2 and it closes up:
    # enter. (Bar 20's own ATR would be (4 × 2 + 7) / 5 = 3, and 3 × 3 > 7: using it would not trigger.)
    # SMA(10) at bar 29 is exactly 106 (no exit at 106); at bar 30 it is (9 × 106 + 103) / 10 = 105.7 > 103: exit.
    assert long_bars(run(Volatility, candles, window=5, k=3.0, exit_window=10)) == list(range(20, 30))
    assert long_bars(run(Volatility, candles, window=5, k=4.0, exit_window=10)) == []  # 7 is not > 8


def test_volatility_ignores_down_spikes() -> None:
    candles = volatility_candles(94.0, 100.0, 93.0)  # range 7 > 3 × 2, but the close is below the previous close
    assert long_bars(run(Volatility, candles, window=5, k=3.0, exit_window=10)) == []


def test_volatility_warmup_covers_the_previous_bar_atr() -> None:
    assert Volatility().warmup({"window": 60, "k": 3.0, "exit_window": 30}) == 62
    assert Volatility().warmup({"window": 14, "k": 3.0, "exit_window": 120}) == 121
