"""Metrics: every definition against hand-computed values, edge cases that are null, kernel against reference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from backfarm.core.costs import Costs
from backfarm.core.results import METRICS
from backfarm.core.results import METRICS as METRIC_NAMES
from backfarm.engine.backtest import BacktestResult, run_backtest
from backfarm.engine.metrics import reference_metrics

FREE = Costs(fee_bps=0.0, spread_bps=0.0)


def run(
    opens: Sequence[float], closes: Sequence[float], exposure: Sequence[float], capital: float, bars_per_year: float
) -> BacktestResult:
    o, c = np.array(opens, float), np.array(closes, float)
    return run_backtest(
        o, np.maximum(o, c), np.minimum(o, c), c, np.array(exposure, float), FREE, capital, bars_per_year, record=True
    )


def test_a_backtest_reports_exactly_the_result_models_metrics_in_order() -> None:
    result = run([10, 10, 11], [10, 11, 12], [1, 1, 0], capital=100.0, bars_per_year=365.0)
    assert tuple(result.metrics) == METRICS


def test_every_metric_on_a_single_losing_round_trip() -> None:
    # capital 100, no costs, bars_per_year 16 (so √bpy = 4 and bpy/n = 4):
    # bar 0: flat, E0 = 100; the target 1 buys at bar 1's open 10 → 10 units
    # closes 11, 5.5, 6.6 → E = 100, 110, 55, 66 (the last close sells: 'end')
    # r = [0, 0.1, −0.5, 0.2]
    result = run([10, 10, 11, 5.5], [10, 11, 5.5, 6.6], [1, 1, 1, 1], capital=100.0, bars_per_year=16.0)
    m = result.metrics
    assert list(m) == list(METRIC_NAMES)
    expected = {
        "total_return": -0.34,  # 66/100 − 1
        "cagr": -0.81025264,  # 0.66^(16/4) − 1 = 0.18974736 − 1
        # mean r = −0.2/4 = −0.05; Σ(r − mean)² = 0.05² + 0.15² + 0.45² + 0.25² = 0.29; var = 0.29/3 = 0.0966667
        "volatility": 1.243650540411842,  # √0.0966667 = 0.3109126 × 4
        "sharpe": -0.6432675209026769,  # −0.05 / 0.3109126 × 4
        "sortino": -0.8,  # mean(min(r,0)²) = 0.25/4 = 0.0625, √ = 0.25 → −0.05 / 0.25 × 4
        "max_drawdown": -0.5,  # peaks 100, 110, 110, 110 → 55/110 − 1
        "calmar": -1.62050528,  # −0.81025264 / 0.5
        "trades": 1,
        "wins": 0,
        "win_rate": 0.0,
        "profit_factor": 0.0,  # no winning pnl / |−34|
        "avg_trade": -0.34,  # pnl −34 / cost 100
        "exposure": 0.75,  # closes of bars 1, 2, 3 (bar 3 is closed out at its close)
        "turnover": 1.66,  # (100 bought + 66 sold) / 100
        "fees_paid": 0.0,
    }
    for name, want in expected.items():
        assert m[name] == pytest.approx(want, rel=1e-9, abs=1e-15), name
    assert isinstance(m["trades"], int) and isinstance(m["wins"], int)


def test_trade_metrics_with_a_win_a_loss_and_a_break_even() -> None:
    # capital 100, no costs, prices exact in binary; targets 1,0,1,0,1,0,0 trade at the next open:
    # bar 1 buy 10 @ 10 → bar 2 sell @ 12.5: pnl +25 (ret 0.25)
    # bar 3 buy 10 @ 12.5 → bar 4 sell @ 11.25: pnl −12.5 (ret −0.1)
    # bar 5 buy 10 @ 11.25 → bar 6 sell @ 11.25: pnl 0 (ret 0) — break-even, neither a win nor a loss
    opens = [10, 10, 12.5, 12.5, 11.25, 11.25, 11.25]
    closes = [10, 12.5, 12.5, 11.25, 11.25, 11.25, 11.25]
    result = run(opens, closes, [1, 0, 1, 0, 1, 0, 0], capital=100.0, bars_per_year=7.0)
    m = result.metrics
    assert result.trades is not None and result.trades.pnl.tolist() == [25.0, -12.5, 0.0]
    # E = 100, 125, 125, 112.5, 112.5, 112.5, 112.5 → r = [0, 0.25, 0, −0.1, 0, 0, 0]
    expected = {
        "total_return": 0.125,
        "cagr": 0.125,  # 1.125^(7/7) − 1
        # mean = 0.15/7 = 0.0214286; var = (Σr² − 7·mean²)/6 = (0.0725 − 0.0032143)/6 = 0.0115476
        "volatility": 0.2843120351538664,  # √0.0115476 = 0.1074598 × √7
        "sharpe": 0.5275893435844943,  # 0.0214286 / 0.1074598 × √7
        "sortino": 1.5,  # mean(min(r,0)²) = 0.01/7 → (0.15/7) / (0.1/√7) × √7 = 1.5
        "max_drawdown": -0.1,  # 112.5 / 125 − 1
        "calmar": 1.25,  # 0.125 / 0.1
        "trades": 3,
        "wins": 1,
        "win_rate": 1 / 3,
        "profit_factor": 2.0,  # 25 / |−12.5|
        "avg_trade": 0.05,  # (0.25 − 0.1 + 0) / 3
        "exposure": 3 / 7,  # closes of bars 1, 3, 5
        "turnover": 6.875,  # buys 100 + 125 + 112.5, sells 125 + 112.5 + 112.5 → 687.5 / 100
        "fees_paid": 0.0,
    }
    for name, want in expected.items():
        assert m[name] == pytest.approx(want, rel=1e-9, abs=1e-15), name


def test_fees_paid_is_the_sum_of_both_sides() -> None:
    costs = Costs(fee_bps=50.0, spread_bps=0.0)
    o = np.array([10.0, 10.0, 20.0, 20.0])
    result = run_backtest(o, o, o, o, np.array([1.0, 0, 0, 0]), costs, 1005.0, 365.0)
    # buy: spend 1005 = notional × 1.005 → notional 1000, fee 5 (100 units); sell 100 @ 20 = 2000, fee 10
    assert result.metrics["fees_paid"] == pytest.approx(15.0)
    assert result.metrics["turnover"] == pytest.approx(3000 / 1005)
    assert result.final_equity == pytest.approx(1990.0)


def test_undefined_metrics_are_null() -> None:
    # one winning trade: no losing trade → profit_factor null; a rising curve → max_drawdown 0 → calmar null;
    # no negative bar return → sortino null
    m = run([10, 10, 11], [10, 11, 12], [1, 1, 1], capital=100.0, bars_per_year=3.0).metrics
    assert (m["profit_factor"], m["max_drawdown"], m["calmar"], m["sortino"]) == (None, 0.0, None, None)
    assert (m["wins"], m["win_rate"]) == (1, 1.0)
    # cagr annualised from 2 one-minute bars overflows float64: null, and so is calmar
    m = run([10, 10], [10, 11], [1, 1], capital=100.0, bars_per_year=525_600.0).metrics
    assert (m["cagr"], m["calmar"]) == (None, None)
    assert m["total_return"] == pytest.approx(0.1)


def test_reference_metrics_edge_cases() -> None:
    none = np.array([])
    wiped = reference_metrics(np.array([100.0, 0.0]), 100.0, 2.0, np.array([-100.0]), np.array([-1.0]), 1, 100.0, 0)
    assert (wiped["cagr"], wiped["calmar"], wiped["max_drawdown"]) == (None, None, -1.0)
    flat = reference_metrics(np.array([100.0, 100.0, 100.0]), 100.0, 365.0, none, none, 0, 0.0, 0.0)
    assert (flat["sharpe"], flat["sortino"], flat["win_rate"], flat["avg_trade"]) == (None, None, None, None)
    assert (flat["volatility"], flat["trades"], flat["cagr"]) == (0.0, 0, 0.0)
    # drawdown is measured from max(capital, running peak): a curve that starts below capital is in drawdown
    under = reference_metrics(np.array([90.0, 95.0]), 100.0, 1.0, none, none, 0, 0.0, 0.0)
    assert under["max_drawdown"] == pytest.approx(-0.1)


def test_kernel_drawdown_starts_from_capital() -> None:
    # bar 1 buys at 10 and closes at 9: E1 = 90 < capital → drawdown −10% although E never had a higher peak
    m = run([10, 10, 9.5], [10, 9, 9.5], [1, 1, 1], capital=100.0, bars_per_year=365.0).metrics
    assert m["max_drawdown"] == pytest.approx(-0.1)


@pytest.mark.parametrize("seed", range(20))
def test_kernel_accumulators_match_the_reference_on_random_series(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(2, 3000))
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate(([50.0], close[:-1]))
    high = np.maximum(open_, close) * 1.004
    low = np.minimum(open_, close) * 0.996
    exposure = np.repeat(rng.choice([0.0, 1.0, 0.5, np.nan], n), rng.integers(1, 40, n))[:n]
    costs = Costs(stop_loss_bps=200.0, take_profit_bps=300.0) if seed % 2 else Costs()
    bpy = float(rng.choice([365.0, 8760.0, 525_600.0]))
    result = run_backtest(open_, high, low, close, exposure, costs, 5000.0, bpy, record=True)
    assert result.equity is not None and result.trades is not None
    trades = result.trades
    # held closes per round trip: from its entry bar up to the bar before its exit, plus the exit bar for 'end'
    held = int(np.sum(trades.exit_bar - trades.entry_bar + (trades.exit_reason == 3)))
    notional = float(np.sum(trades.qty * (trades.entry_price + trades.exit_price)))
    expected = reference_metrics(result.equity, 5000.0, bpy, trades.pnl, trades.ret, held, notional, notional * 0.006)
    for name in METRIC_NAMES:
        want = expected[name]
        assert result.metrics[name] == (None if want is None else pytest.approx(want, rel=1e-9, abs=1e-12)), name


@pytest.mark.parametrize("drift", [-1e-3, 0.0, 1e-3])
def test_kernel_max_drawdown_is_bit_exact_even_near_total_loss(drift: float) -> None:
    """The kernel skips the division on bars that cannot deepen the drawdown; the result must not change a bit."""
    rng = np.random.default_rng(5)
    n = 20_000
    close = 100 * np.exp(np.cumsum(drift + rng.normal(0, 0.01, n)))  # drift −1e-3 loses ~99.9999999 %
    open_ = np.concatenate(([100.0], close[:-1]))
    exposure = np.ones(n)
    high, low = np.maximum(open_, close), np.minimum(open_, close)
    result = run_backtest(open_, high, low, close, exposure, FREE, 100.0, 365.0, record=True)
    assert result.equity is not None
    peaks = np.maximum(np.maximum.accumulate(result.equity), 100.0)
    assert result.metrics["max_drawdown"] == float(np.min(result.equity / peaks - 1.0))
