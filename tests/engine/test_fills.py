"""The fill model: hand-computed few-bar cases, no lookahead, and the kernel against a slow literal reference."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from backfarm.core.costs import Costs
from backfarm.core.results import METRICS as METRIC_NAMES
from backfarm.engine.backtest import BacktestResult, Trades, run_backtest, run_many
from backfarm.engine.downsample import downsample_minmax
from backfarm.engine.kernel import _clean_target, _next_change
from backfarm.engine.metrics import reference_metrics
from backfarm.errors import DataError, ValidationError

FREE = Costs(fee_bps=0.0, spread_bps=0.0)
FEE1 = Costs(fee_bps=100.0, spread_bps=0.0)  # 1% fee per side, no spread
FEE1_SPREAD2 = Costs(fee_bps=100.0, spread_bps=200.0)  # 1% fee, buys at open×1.01, sells at open×0.99


def run(
    opens: Sequence[float],
    closes: Sequence[float],
    exposure: Sequence[float],
    costs: Costs = FREE,
    capital: float = 1000.0,
    highs: Sequence[float] | None = None,
    lows: Sequence[float] | None = None,
) -> BacktestResult:
    """Record a backtest of a few bars; high/low default to max/min(open, close)."""
    o, c = np.array(opens, float), np.array(closes, float)
    h = np.maximum(o, c) if highs is None else np.array(highs, float)
    lo = np.minimum(o, c) if lows is None else np.array(lows, float)
    return run_backtest(o, h, lo, c, np.array(exposure, float), costs, capital, 365.0, record=True)


def trades_of(result: BacktestResult) -> Trades:
    assert result.trades is not None
    return result.trades


# ---------------------------------------------------------------------------------------------- hand-computed cases


def test_single_round_trip_with_fee_and_spread() -> None:
    result = run([100, 100, 110, 120], [100, 105, 115, 120], [1, 0, 0, 0], FEE1_SPREAD2, capital=10_000)
    # bar 1 open 100: buy fill 100×1.01 = 101; q = 10000 / (101×1.01) = 10000/102.01 = 98.0296049407
    #   notional = q×101 = 9900.99009901, fee = 99.0099009901, cash 0
    q = 10_000 / 102.01
    assert q == pytest.approx(98.0296049407)
    # bar 1 close 105: E1 = q×105 = 10293.1085187
    # bar 2 open 110: sell fill 110×0.99 = 108.9; notional = q×108.9 = 10675.4239780, fee 106.754239780,
    #   proceeds = 10568.6697382; E2 = E3 = 10568.6697382
    assert result.equity is not None
    assert result.equity.tolist() == pytest.approx([10_000, 10293.1085187, 10568.6697382, 10568.6697382])
    t = trades_of(result)
    assert len(t) == 1
    assert (t.entry_bar[0], t.exit_bar[0], t.reasons()) == (1, 2, ["signal"])
    assert t.entry_price[0] == pytest.approx(101.0) and t.exit_price[0] == pytest.approx(108.9)
    assert t.qty[0] == pytest.approx(98.0296049407)
    assert t.pnl[0] == pytest.approx(568.6697382)  # 10568.6697382 − 10000
    assert t.ret[0] == pytest.approx(0.05686697382)
    m = result.metrics
    assert m["fees_paid"] == pytest.approx(205.764140770)  # 99.0099009901 + 106.754239780
    assert m["turnover"] == pytest.approx(2.05764140758)  # (9900.99009901 + 10675.4239780) / 10000
    assert m["exposure"] == pytest.approx(0.25)  # only bar 1's close finds the position
    assert (m["trades"], m["wins"], m["win_rate"]) == (1, 1, 1.0)
    assert result.final_equity == pytest.approx(10568.6697382)


def test_partial_rebalance_up_adds_to_the_round_trip() -> None:
    result = run([100, 100, 200, 100, 100], [100, 100, 200, 100, 100], [0.5, 1, 0, 0, 0], FEE1)
    # bar 1 open 100: E = 1000, target 500 → spend 500: q1 = 500 / (100×1.01) = 4.95049504950, fee 4.95049504950
    # bar 2 open 200: E = 500 + 4.9505×200 = 1490.09900990; target 1490.099 − held 990.099 = 500 = all the cash:
    #   q2 = 500 / (200×1.01) = 2.47524752475; qty = 7.42574257426; fee 4.95049504950; cash 0
    # bar 3 open 100: sell 7.42574257426 × 100 = 742.574257426, fee 7.42574257426 → proceeds 735.148514851
    t = trades_of(result)
    assert len(t) == 1
    assert (t.entry_bar[0], t.exit_bar[0]) == (1, 3)
    assert t.qty[0] == pytest.approx(7.42574257426)
    assert t.entry_price[0] == pytest.approx(133.333333333)  # (495.049504950 + 495.049504950) / 7.42574257426
    assert t.exit_price[0] == pytest.approx(100.0)
    assert t.pnl[0] == pytest.approx(-264.851485149)  # 735.148514851 − (500 + 500)
    assert t.ret[0] == pytest.approx(-0.264851485149)
    assert result.equity is not None
    # E1 = 500 + 4.9505×100 = 995.049504950; E2 = 7.42574257426×200 = 1485.14851485; E3 = E4 = 735.148514851
    assert result.equity.tolist() == pytest.approx([1000, 995.049504950, 1485.14851485, 735.148514851, 735.148514851])
    assert result.metrics["fees_paid"] == pytest.approx(17.3267326733)  # 4.9505 + 4.9505 + 7.42574
    assert result.metrics["exposure"] == pytest.approx(0.4)  # bars 1 and 2 of 5


def test_partial_rebalance_down_keeps_the_round_trip_open() -> None:
    result = run([100, 100, 200, 100], [100, 100, 200, 100], [1, 0.5, 0, 0], FEE1)
    # bar 1 open 100: buy q = 1000 / 101 = 9.90099009901 (fee 9.90099009901)
    # bar 2 open 200: E = 1980.19801980, target 990.099009901, held 1980.198 → sell (1980.198 − 990.099)/200
    #   = 4.95049504950 units: notional 990.099009901, fee 9.90099009901, proceeds 980.198019802
    # bar 3 open 100: sell the remaining 4.95049504950: notional 495.049504950, fee 4.95049504950 → 490.099009901
    t = trades_of(result)
    assert len(t) == 1
    assert (t.entry_bar[0], t.exit_bar[0]) == (1, 3)
    assert t.qty[0] == pytest.approx(9.90099009901)
    assert t.exit_price[0] == pytest.approx(150.0)  # (990.099 + 495.0495) / 9.90099
    assert t.pnl[0] == pytest.approx(470.297029703)  # 980.198019802 + 490.099009901 − 1000
    assert result.equity is not None
    # E2 = 980.198019802 + 4.95049504950×200 = 1970.29702970; E3 = 1470.29702970
    assert result.equity[2] == pytest.approx(1970.29702970)
    assert result.final_equity == pytest.approx(1470.29702970)
    assert result.metrics["turnover"] == pytest.approx(2.47524752475)  # (990.099 + 990.099 + 495.0495) / 1000


STOPS = Costs(fee_bps=100.0, spread_bps=200.0, stop_loss_bps=1000.0, take_profit_bps=2000.0)
# With STOPS a buy at open 100 fills at 101: stop level 101×0.9 = 90.9, target level 101×1.2 = 121.2;
# q = 1000 / (101×1.01) = 9.80296049407, and an exit at level L receives L×0.99 less the 1% fee.
Q_STOPS = 1000 / 102.01


def test_stop_loss_hit_intrabar_then_flat_until_the_target_changes() -> None:
    opens = [100, 100, 98, 95, 95, 95, 95]
    closes = [100, 99, 92, 95, 95, 95, 95]
    lows = [100, 95, 85, 95, 95, 95, 95]
    result = run(opens, closes, [1, 1, 1, 1, 0, 1, 1], STOPS, lows=lows)
    # bar 1: low 95 > 90.9 → held. bar 2: open 98 > 90.9, low 85 <= 90.9 → sell at 90.9×0.99 = 89.991
    #   proceeds = 9.80296049407 × 89.991 × 0.99 = 1000 × 0.9 × 0.99² / 1.01 = 873.356435644; pnl = −126.64
    # bar 3: target still 1 → stay flat. bar 4: target 0 (change) → nothing to sell. bar 5: target 1 (change)
    # → bar 6 open 95: buy again; the last bar's close 95 sells it: reason 'end'.
    t = trades_of(result)
    assert t.reasons() == ["stop", "end"]
    assert t.entry_bar.tolist() == [1, 6] and t.exit_bar.tolist() == [2, 6]
    assert t.exit_price[0] == pytest.approx(89.991)
    proceeds = Q_STOPS * 89.991 * 0.99
    assert proceeds == pytest.approx(873.356435644)
    assert t.pnl[0] == pytest.approx(proceeds - 1000)
    assert result.equity is not None
    assert result.equity[2:6].tolist() == pytest.approx([proceeds] * 4)  # flat after the stop
    # bar 6: buy with all of it at 95×1.01, sell at 95×0.99: E6 = proceeds × 0.99×0.99 / (1.01×1.01)
    assert result.final_equity == pytest.approx(proceeds * 0.9801 / 1.0201)
    assert result.metrics["exposure"] == pytest.approx(2 / 7)  # bar 1 and bar 6 (closed out at its close)


def test_gap_through_the_stop_fills_at_the_open() -> None:
    result = run([100, 100, 80], [100, 99, 85], [1, 1, 1], STOPS, lows=[100, 95, 75])
    # bar 2 opens at 80, below the stop 90.9: sell at 80×0.99 = 79.2 (not at the level)
    # proceeds = 9.80296049407 × 79.2 × 0.99 = 768.630526419
    t = trades_of(result)
    assert t.reasons() == ["stop"] and t.exit_bar[0] == 2
    assert t.exit_price[0] == pytest.approx(79.2)
    assert result.final_equity == pytest.approx(768.630526419)


def test_stop_wins_when_stop_and_target_are_touched_in_one_bar() -> None:
    result = run([100, 100, 100], [100, 99, 100], [1, 1, 1], STOPS, highs=[100, 101, 130], lows=[100, 95, 85])
    # bar 2 touches 85 <= 90.9 and 130 >= 121.2: the stop wins → 90.9×0.99
    t = trades_of(result)
    assert t.reasons() == ["stop"]
    assert t.exit_price[0] == pytest.approx(89.991)


def test_take_profit_at_the_level_and_on_a_gap_up() -> None:
    result = run([100, 100, 110], [100, 99, 110], [1, 1, 1], STOPS, highs=[100, 101, 125], lows=[100, 95, 105])
    # bar 2: high 125 >= 121.2 → sell at 121.2×0.99 = 119.988; proceeds = q×119.988×0.99 = 1000×1.2×0.99²/1.01
    #   = 1164.47524752
    t = trades_of(result)
    assert t.reasons() == ["target"] and t.exit_price[0] == pytest.approx(119.988)
    assert result.final_equity == pytest.approx(1164.47524752)
    assert result.metrics["wins"] == 1
    gap = run([100, 100, 130], [100, 99, 131], [1, 1, 1], STOPS, highs=[100, 101, 135], lows=[100, 95, 129])
    # bar 2 opens at 130, above the target: fill at the better open, 130×0.99 = 128.7
    assert trades_of(gap).exit_price[0] == pytest.approx(128.7)
    assert trades_of(gap).reasons() == ["target"]


def test_stop_is_checked_on_the_entry_bar_after_the_open_fill() -> None:
    result = run([100, 100, 100], [100, 92, 100], [1, 1, 1], STOPS, lows=[100, 85, 100])
    # bar 1 fills at 101 and the same bar's low 85 touches 90.9 → exits on its entry bar
    t = trades_of(result)
    assert (t.entry_bar[0], t.exit_bar[0], t.reasons()) == (1, 1, ["stop"])
    assert result.metrics["exposure"] == 0.0  # no close found the position held


def test_forced_close_at_the_end() -> None:
    result = run([100, 100, 110], [100, 105, 120], [1, 1, 1], FEE1_SPREAD2)
    # buy at 101 (q = 1000/102.01); the last close 120 sells at 120×0.99 = 118.8 less 1% fee
    t = trades_of(result)
    assert t.reasons() == ["end"] and t.exit_bar[0] == 2 and t.exit_price[0] == pytest.approx(118.8)
    assert result.final_equity == pytest.approx(1152.94578963)  # 1000 / 102.01 × 118.8 × 0.99
    assert result.equity is not None and result.equity[-1] == result.final_equity  # E_{n−1} includes the costs
    assert result.metrics["exposure"] == pytest.approx(2 / 3)  # bars 1 and 2


def test_no_trades() -> None:
    result = run([100, 101, 102], [101, 102, 103], [0, 0, 1], FEE1_SPREAD2)  # a target on the last bar cannot trade
    m = result.metrics
    assert (m["trades"], m["wins"], m["win_rate"], m["profit_factor"], m["avg_trade"]) == (0, 0, None, None, None)
    assert (m["total_return"], m["cagr"], m["volatility"], m["max_drawdown"]) == (0.0, 0.0, 0.0, 0.0)
    assert (m["sharpe"], m["sortino"], m["calmar"]) == (None, None, None)
    assert (m["exposure"], m["turnover"], m["fees_paid"]) == (0.0, 0.0, 0.0)
    assert len(trades_of(result)) == 0 and result.final_equity == 1000.0


def test_targets_are_cleaned_nan_to_zero_and_clipped() -> None:
    result = run([10, 10, 10, 10, 10], [10, 10, 10, 10, 10], [math.nan, 2.5, 1.0, -3.0, 0])
    # NaN → 0 (no change from the start), 2.5 → 1 (buy at bar 2), 1.0 (no change), −3 → 0 (sell at bar 4)
    t = trades_of(result)
    assert (t.entry_bar.tolist(), t.exit_bar.tolist()) == ([2], [4])
    assert t.qty[0] == pytest.approx(100.0)


def test_unchanged_target_does_not_rebalance_when_prices_drift() -> None:
    result = run([10, 10, 20, 5], [10, 20, 5, 5], [0.5, 0.5, 0.5, 0.5])
    # half the capital is invested once at bar 1 (50 units); no later trade although its weight drifts
    t = trades_of(result)
    assert t.qty.tolist() == [50.0] and t.reasons() == ["end"]
    assert result.metrics["turnover"] == pytest.approx(0.75)  # (500 buy + 250 sell) / 1000


# ------------------------------------------------------------------------------------------------- no lookahead


Bars = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""Open, high, low, close."""


def random_bars(rng: np.random.Generator, n: int) -> Bars:
    """A random walk with gaps and wicks: open, high, low, close."""
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = np.concatenate(([100.0], close[:-1])) * np.exp(rng.normal(0, 0.005, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.01, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
    return open_, high, low, close


def random_exposure(rng: np.random.Generator, n: int) -> np.ndarray:
    """Runs of targets from a small set, including NaN and out-of-range values."""
    choices = np.array([0.0, 0.0, 1.0, 1.0, 0.3, 0.75, np.nan, 1.7, -0.5])
    runs = rng.integers(1, 12, n)
    values = np.repeat(rng.choice(choices, n), runs)[:n]
    return values


def test_no_lookahead_the_past_never_depends_on_later_bars() -> None:
    rng = np.random.default_rng(7)
    n = 120
    bars = random_bars(rng, n)
    exposure = random_exposure(rng, n)
    base = run_backtest(*bars, exposure, STOPS, 1000.0, 365.0, record=True)
    for t in (5, 40, 77, 118):
        # replace every value after bar t (prices and targets) with junk: nothing up to t's close may change
        o, h, lo, c = (a.copy() for a in bars)
        for a in (o, h, lo, c):
            a[t + 1 :] *= np.exp(rng.normal(0, 0.3, n - t - 1))
        h[t + 1 :] = np.maximum.reduce([o, h, lo, c])[t + 1 :]
        lo[t + 1 :] = np.minimum.reduce([o, h, lo, c])[t + 1 :]
        changed = exposure.copy()
        changed[t + 1 :] = rng.random(n - t - 1)
        result = run_backtest(o, h, lo, c, changed, STOPS, 1000.0, 365.0, record=True)
        assert base.equity is not None and result.equity is not None
        assert np.array_equal(result.equity[: t + 1], base.equity[: t + 1])
        done, again = trades_of(base), trades_of(result)
        closed = done.exit_bar <= t
        assert np.array_equal(again.exit_bar[: closed.sum()], done.exit_bar[closed])
        assert np.array_equal(again.pnl[: closed.sum()], done.pnl[closed])


def test_the_decision_at_t_fills_at_the_open_of_t_plus_1() -> None:
    opens = [100.0, 100.0, 100.0, 100.0]
    closes = [100.0, 100.0, 100.0, 100.0]
    exposure = [0, 1, 1, 1]  # decided at bar 1's close
    base = run(opens, closes, exposure)
    assert trades_of(base).entry_bar.tolist() == [2]
    # bar 2's close, high and low play no part in the fill; its open does
    moved = run(opens, [100, 100, 50, 100], exposure, highs=[100, 100, 300, 100], lows=[100, 100, 40, 100])
    assert trades_of(moved).entry_price.tolist() == [100.0]
    gapped = run([100, 100, 125, 100], closes, exposure)
    assert trades_of(gapped).entry_price.tolist() == [125.0]
    # and bar 1's own values do not matter to a decision already taken
    assert trades_of(run([100, 100, 100, 100], [100, 3, 100, 100], exposure)).entry_price.tolist() == [100.0]


# ------------------------------------------------------------------------------------------ reference and random


class ReferenceBroker:
    """The fill model written out literally, one bar at a time in plain Python (slow, for comparison only)."""

    def __init__(self, costs: Costs, capital: float) -> None:
        self.costs = costs
        self.cash = capital
        self.qty = 0.0
        self.avg_entry = 0.0
        self.trip: dict[str, float] = {}
        self.trades: list[dict[str, float]] = []
        self.notional = 0.0
        self.fees = 0.0

    def buy(self, spend: float, open_price: float, bar: int) -> None:
        price = open_price * (1 + self.costs.buy_markup)
        qty = spend / (price * (1 + self.costs.fee))
        if self.qty == 0.0:
            self.trip = {"entry_bar": bar, "cost": 0.0, "proceeds": 0.0, "bought": 0.0, "buy_value": 0.0}
            self.trip.update({"sold": 0.0, "sell_value": 0.0})
            self.avg_entry = price
        else:
            self.avg_entry = (self.qty * self.avg_entry + qty * price) / (self.qty + qty)
        self.qty += qty
        self.cash -= spend
        self.trip["cost"] += spend
        self.trip["bought"] += qty
        self.trip["buy_value"] += qty * price
        self.notional += qty * price
        self.fees += qty * price * self.costs.fee

    def sell(self, qty: float, level: float, bar: int, reason: str) -> None:
        price = level * (1 - self.costs.sell_markdown)
        fee = qty * price * self.costs.fee
        self.cash += qty * price - fee
        self.trip["proceeds"] += qty * price - fee
        self.trip["sold"] += qty
        self.trip["sell_value"] += qty * price
        self.notional += qty * price
        self.fees += fee
        self.qty = 0.0 if qty >= self.qty else self.qty - qty
        if self.qty == 0.0:
            pnl = self.trip["proceeds"] - self.trip["cost"]
            self.trades.append(
                {
                    "entry_bar": self.trip["entry_bar"],
                    "exit_bar": bar,
                    "entry_price": self.trip["buy_value"] / self.trip["bought"],
                    "exit_price": self.trip["sell_value"] / self.trip["sold"],
                    "qty": self.trip["bought"],
                    "pnl": pnl,
                    "ret": pnl / self.trip["cost"],
                    "exit_reason": ["signal", "stop", "target", "end"].index(reason),
                }
            )

    def rebalance(self, x: float, open_price: float, bar: int) -> None:
        value = self.qty * open_price
        wanted = x * (self.cash + value)
        if x == 0.0 and self.qty > 0:
            self.sell(self.qty, open_price, bar, "signal")
        elif wanted > value and min(wanted - value, self.cash) > 0:
            self.buy(min(wanted - value, self.cash), open_price, bar)
        elif wanted < value:
            self.sell(min((value - wanted) / open_price, self.qty), open_price, bar, "signal")

    def exits(self, o: float, h: float, lo: float, bar: int) -> None:
        sl, tp = self.costs.stop_loss_bps, self.costs.take_profit_bps
        stop = self.avg_entry * (1 - sl / 1e4) if sl else None
        target = self.avg_entry * (1 + tp / 1e4) if tp else None
        if stop is not None and o <= stop:
            self.sell(self.qty, o, bar, "stop")
        elif target is not None and o >= target:
            self.sell(self.qty, o, bar, "target")
        elif stop is not None and lo <= stop:
            self.sell(self.qty, stop, bar, "stop")
        elif target is not None and h >= target:
            self.sell(self.qty, target, bar, "target")


def clean(x: float) -> float:
    return 0.0 if math.isnan(x) else min(max(x, 0.0), 1.0)


def reference_backtest(
    bars: Bars, exposure: np.ndarray, costs: Costs, capital: float
) -> tuple[list[float], ReferenceBroker, int]:
    """Equity at every close, the broker (trades, notional, fees) and the number of held closes."""
    open_, high, low, close = (a.tolist() for a in bars)
    targets = [clean(x) for x in exposure.tolist()]
    n = len(close)
    broker = ReferenceBroker(costs, capital)
    equity: list[float] = []
    held = 0
    for t in range(n):
        previous = targets[t - 2] if t >= 2 else 0.0
        if t >= 1 and targets[t - 1] != previous:
            broker.rebalance(targets[t - 1], open_[t], t)
        if broker.qty > 0:
            broker.exits(open_[t], high[t], low[t], t)
        if broker.qty > 0:
            held += 1
            if t == n - 1:
                broker.sell(broker.qty, close[t], t, "end")
        equity.append(broker.cash + broker.qty * close[t])
    return equity, broker, held


RANDOM_COSTS = [
    FREE,
    FEE1_SPREAD2,
    Costs(),
    Costs(fee_bps=25.0, spread_bps=4.0, slippage_bps=3.0, stop_loss_bps=300.0),
    Costs(fee_bps=10.0, spread_bps=2.0, take_profit_bps=400.0),
    Costs(stop_loss_bps=150.0, take_profit_bps=150.0),
]


@pytest.mark.parametrize("seed", range(60))
def test_kernel_matches_the_reference_on_random_series(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    bars = random_bars(rng, n)
    exposure = random_exposure(rng, n)
    costs = RANDOM_COSTS[seed % len(RANDOM_COSTS)]
    capital = float(rng.choice([1000.0, 12345.67, 1e6]))
    result = run_backtest(*bars, exposure, costs, capital, 8760.0, record=True)
    equity, broker, held = reference_backtest(bars, exposure, costs, capital)

    assert result.equity is not None
    np.testing.assert_allclose(result.equity, equity, rtol=1e-11)
    assert result.final_equity == pytest.approx(equity[-1], rel=1e-11)
    got = trades_of(result)
    assert len(got) == len(broker.trades)
    for name in ("entry_bar", "exit_bar", "exit_reason"):
        assert getattr(got, name).tolist() == [trade[name] for trade in broker.trades]
    for name in ("entry_price", "exit_price", "qty", "pnl", "ret"):
        np.testing.assert_allclose(getattr(got, name), [trade[name] for trade in broker.trades], rtol=1e-9, atol=1e-9)
    pnl = np.array([trade["pnl"] for trade in broker.trades])
    ret = np.array([trade["ret"] for trade in broker.trades])
    expected = reference_metrics(np.array(equity), capital, 8760.0, pnl, ret, held, broker.notional, broker.fees)
    assert list(result.metrics) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        want = expected[name]
        assert result.metrics[name] == (None if want is None else pytest.approx(want, rel=1e-9, abs=1e-12)), name


def test_random_series_exercise_every_exit_reason() -> None:
    """Guards the random comparison above against silently testing only the easy paths."""
    seen: set[str] = set()
    for seed in range(60):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(2, 400))
        bars = random_bars(rng, n)
        exposure = random_exposure(rng, n)
        costs = RANDOM_COSTS[seed % len(RANDOM_COSTS)]
        seen.update(trades_of(run_backtest(*bars, exposure, costs, 1000.0, 365.0, record=True)).reasons())
    assert seen == {"signal", "stop", "target", "end"}


def test_record_off_gives_the_same_metrics_and_run_many_agrees() -> None:
    rng = np.random.default_rng(3)
    bars = random_bars(rng, 300)
    exposures = [random_exposure(rng, 300) for _ in range(4)]
    recorded = [run_backtest(*bars, x, STOPS, 1000.0, 365.0, record=True) for x in exposures]
    plain = [run_backtest(*bars, x, STOPS, 1000.0, 365.0) for x in exposures]
    assert [r.metrics for r in plain] == [r.metrics for r in recorded]
    assert all(r.equity is None and r.trades is None for r in plain)
    assert run_many(*bars, exposures, STOPS, 1000.0, 365.0) == [r.metrics for r in plain]


# -------------------------------------------------------------------------------------------- inputs and helpers


def test_invalid_inputs_are_user_errors() -> None:
    p = np.full(3, 10.0)
    bars = (p, p, p, p)
    with pytest.raises(ValidationError, match="at least 2 bars"):
        run_backtest(p[:1], p[:1], p[:1], p[:1], np.zeros(1), FREE, 1000.0, 365.0)
    with pytest.raises(ValidationError, match="exposure has 2 values for 3 bars"):
        run_backtest(*bars, np.zeros(2), FREE, 1000.0, 365.0)
    with pytest.raises(ValidationError, match="differ in length"):
        run_backtest(p, p, p, np.full(4, 10.0), np.zeros(3), FREE, 1000.0, 365.0)
    with pytest.raises(ValidationError, match="capital"):
        run_backtest(*bars, np.zeros(3), FREE, 0.0, 365.0)
    with pytest.raises(ValidationError, match="bars per year"):
        run_backtest(*bars, np.zeros(3), FREE, 1000.0, math.nan)


def test_a_bad_price_where_it_is_used_is_a_data_error() -> None:
    bars = (np.full(4, 10.0), np.full(4, 10.0), np.full(4, 10.0), np.full(4, 10.0))
    bars[3][2] = math.nan  # bar 2's close, read while the position bought at bar 1 is held
    with pytest.raises(DataError, match="bar 2"):
        run_backtest(*bars, np.array([1.0, 1, 1, 1]), FREE, 1000.0, 365.0)
    bars[0][1] = -1.0  # bar 1's open, where the buy fills
    with pytest.raises(DataError, match="bar 1"):
        run_backtest(*bars, np.array([1.0, 1, 1, 1]), FREE, 1000.0, 365.0)


def test_inputs_of_other_dtypes_and_layouts_are_accepted() -> None:
    table = np.tile(np.array([[10.0], [11.0], [12.0]]), (1, 5))  # columns of a 2-D array are strided views
    result = run_backtest(table[:, 0], table[:, 1], table[:, 2], table[:, 3], np.array([1, 1, 0]), FREE, 1000.0, 1.0)
    assert result.metrics["trades"] == 1


def test_downsample_keeps_ends_and_extremes() -> None:
    assert downsample_minmax(np.arange(5.0)).tolist() == [0, 1, 2, 3, 4]
    curve = np.linspace(100, 200, 10_000)
    curve[4321] = 10.0  # a deep, one-bar drawdown
    curve[777] = 999.0
    picks = downsample_minmax(curve, max_points=50)
    assert len(picks) <= 50 and picks[0] == 0 and picks[-1] == 9999
    assert {4321, 777} <= set(picks.tolist())
    assert np.all(np.diff(picks) > 0)
    with pytest.raises(ValidationError):
        downsample_minmax(curve, max_points=1)


def test_changes_of_the_cleaned_target_are_found_in_order() -> None:
    # cleaned: 0, 0, 1, 1, 1, 0.5, 0, 0, 1 → changes at bars 2, 5, 6, 8
    raw = np.array([math.nan, -1.0, 2.0, 1.0, math.inf, 0.5, 0.0, -math.inf, 1.0])
    found, prev, s = [], 0.0, _next_change(raw, 0, 0.0)
    while s < len(raw):
        found.append(s)
        prev = _clean_target(raw[s])
        s = _next_change(raw, s + 1, prev)
    assert found == [2, 5, 6, 8]
    assert _next_change(np.zeros(5), 0, 0.0) == 5
