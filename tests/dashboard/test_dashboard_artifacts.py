"""Stored artifacts: min/max downsampling, the encoded curve and trade list, their size, and the runner's records."""

from __future__ import annotations

import numpy as np
import pytest

from backfarm._util.ids import canonical_json
from backfarm.core.candles import Candles
from backfarm.core.costs import Costs
from backfarm.engine.artifacts import (
    MAX_POINTS,
    MAX_TRADES,
    artifacts,
    decode_equity,
    decode_trades,
    equity_artifact,
    table_artifact,
)
from backfarm.engine.backtest import BacktestResult, run_backtest
from backfarm.engine.downsample import downsample_minmax
from backfarm.errors import ValidationError
from tests.dashboard.conftest import Results


def test_downsample_keeps_every_point_of_a_short_curve() -> None:
    assert downsample_minmax(np.arange(5.0)).tolist() == [0, 1, 2, 3, 4]
    assert downsample_minmax(np.arange(MAX_POINTS, dtype=float)).tolist() == list(range(MAX_POINTS))


def test_downsample_picks_each_buckets_min_and_max_by_hand() -> None:
    # 14 points, max_points 8: (8 - 2) // 2 - 1 = 2 buckets over the 12 interior points, of ceil(12 / 2) = 6 each,
    # so buckets [1..6] and [7..12] and no tail; each gives its min and max in index order; 0 and 13 always kept.
    values = np.array([5, 1, 9, 4, 4, 0, 6, 3, 3, 8, 2, 7, 5, 5], dtype=float)
    assert downsample_minmax(values, max_points=8).tolist() == [0, 2, 5, 9, 10, 13]


def test_downsample_handles_a_tail_bucket_and_flat_stretches() -> None:
    # 13 points, max_points 8: 11 interior points, buckets of 6: [1..6], then the tail [7..11].
    values = np.array([0, 2, 2, 2, 2, 2, 2, 1, 1, 9, 1, 1, 0], dtype=float)
    # Bucket 1 is flat: argmin == argmax == 1, kept once. Tail: min at 7 (first 1), max at 9.
    assert downsample_minmax(values, max_points=8).tolist() == [0, 1, 7, 9, 12]
    with pytest.raises(ValidationError):
        downsample_minmax(values, max_points=5)


@pytest.mark.parametrize("n", [501, 502, 997, 4320, 43_201])
def test_downsample_bounds_sorted_unique_and_exact_extremes(n: int) -> None:
    rng = np.random.default_rng(n)
    equity = 10_000 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    idx = downsample_minmax(equity)
    assert len(idx) <= MAX_POINTS
    assert idx[0] == 0 and idx[-1] == n - 1
    assert np.all(np.diff(idx) > 0)
    kept = equity[idx]
    assert kept.max() == equity.max() and kept.min() == equity.min()
    # Every bucket's low survives with the highest peak before its bucket, so the drawn maximum drawdown never
    # overstates the true one and misses at most a peak inside the trough's own bucket.
    full = (equity / np.maximum.accumulate(equity) - 1).min()
    drawn = (kept / np.maximum.accumulate(kept) - 1).min()
    assert full <= drawn <= full * 0.8


def _backtest(n: int = 3000, seed: int = 1) -> tuple[BacktestResult, Candles]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
    ts = (1_700_000_000 + 60 * np.arange(n, dtype=np.int64)) * 10**9
    candles = Candles("synthetic", "TEST-USD", "1m", ts, open_, high, low, close, np.ones(n))
    exposure = (np.sin(np.arange(n) / 37.0) > 0).astype(float)
    result = run_backtest(open_, high, low, close, exposure, Costs(), 10_000.0, 525_600.0, record=True)
    return result, candles


def test_equity_round_trip_with_timestamps() -> None:
    result, candles = _backtest()
    curve = decode_equity(artifacts(result, candles))
    assert curve is not None
    idx = downsample_minmax(result.equity)
    assert curve.bar.tolist() == idx.tolist()
    assert curve.bars == len(result.equity)
    # Values are float32: 7 significant digits.
    np.testing.assert_allclose(curve.equity, result.equity[idx], rtol=1e-7)
    # Each point is stamped with the close of its bar: t0 + (bar + 1) × dt.
    assert curve.ts[0] == 1_700_000_060 and curve.ts[-1] == 1_700_000_000 + len(result.equity) * 60
    dd = curve.drawdown(10_000.0)
    worst = result.metrics["max_drawdown"]
    assert dd.max() <= 0 and worst - 1e-6 <= dd.min() <= 0.8 * worst  # 1e-6: float32 values


def test_far_apart_bars_get_four_byte_steps() -> None:
    """Bar steps of 65,536 or more (only a live session with long gaps could have them) are stored in 4 bytes."""
    bars = np.array([0, 5, 70_000, 70_001, 200_000])
    art = equity_artifact(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), t0=0, dt=60, bars=bars)
    assert art["iw"] == 4 and art["n"] == 200_001
    curve = decode_equity({"equity": art})
    assert curve is not None and curve.bar.tolist() == bars.tolist() and curve.equity.tolist() == [1, 2, 3, 4, 5]
    assert curve.ts.tolist() == [60 * (b + 1) for b in bars.tolist()]


def test_trades_round_trip() -> None:
    result, _ = _backtest()
    trades = result.trades
    assert 0 < len(trades) <= MAX_TRADES
    decoded = decode_trades({"trades": table_artifact(result.trade_table)})
    assert decoded is not None and decoded.total == len(trades) == len(decoded)
    assert decoded.entry_bar.tolist() == trades.entry_bar.tolist()
    assert decoded.exit_bar.tolist() == trades.exit_bar.tolist()
    assert decoded.reasons() == trades.reasons()
    for name in ("entry_price", "exit_price", "qty", "pnl", "ret"):
        np.testing.assert_allclose(getattr(decoded, name), getattr(trades, name), rtol=1e-6)


def test_trade_list_keeps_the_largest_by_absolute_pnl_in_order() -> None:
    n = 7
    table = np.zeros((n, 8))
    table[:, 0] = np.arange(n) * 10  # entry bars
    table[:, 1] = np.arange(n) * 10 + 5  # exit bars
    table[:, 5] = [1.0, -9.0, 2.0, 8.0, -0.5, 3.0, -7.0]  # pnl
    table[:, 7] = [0, 1, 2, 3, 0, 1, 2]
    decoded = decode_trades({"trades": table_artifact(table, max_trades=3)})
    assert decoded is not None
    assert decoded.total == 7 and len(decoded) == 3
    # |pnl| 9, 8 and 7 are trades 1, 3 and 6, kept in the order they closed.
    assert decoded.entry_bar.tolist() == [10, 30, 60]
    assert decoded.pnl.tolist() == [-9.0, 8.0, -7.0]
    assert decoded.reasons() == ["stop", "end", "target"]


@pytest.mark.parametrize("case", ["few", "many", "tie", "none"])
def test_the_engine_table_is_stored_as_its_largest_trades_in_closing_order(case: str) -> None:
    """``table_artifact`` reads the engine's table in place: the kept rows are every trade, or the 50 with the
    largest |pnl| (any 50 of them on a tie across the cut), in the order they closed, each column as stored."""
    rng = np.random.default_rng(7)
    n = {"few": 12, "many": 400, "tie": 60, "none": 0}[case]
    table = np.zeros((n, 8))
    table[:, 0] = np.sort(rng.choice(40_000, n, replace=False))  # unique entry bars identify the rows
    table[:, 1] = table[:, 0] + rng.integers(1, 500, n)
    table[:, 2:5] = rng.uniform(50.0, 150.0, (n, 3))
    table[:, 5] = rng.normal(0.0, 10.0, n)
    table[:, 6] = rng.normal(0.0, 0.01, n)
    table[:, 7] = rng.integers(0, 4, n)
    if case == "tie":
        table[:, 5] = np.round(table[:, 5])  # many equal |pnl| across the cut: the argpartition fallback
    decoded = decode_trades({"trades": table_artifact(table)})
    assert decoded is not None and decoded.total == n and len(decoded) == min(n, MAX_TRADES)
    rows = [int(np.flatnonzero(table[:, 0] == bar)[0]) for bar in decoded.entry_bar]
    assert rows == sorted(rows)  # closing order
    dropped = np.setdiff1d(np.arange(n), rows)
    if len(dropped):
        assert np.abs(table[rows, 5]).min() >= np.abs(table[dropped, 5]).max()
    assert decoded.exit_bar.tolist() == table[rows, 1].astype(int).tolist()
    assert decoded.reason.tolist() == table[rows, 7].astype(int).tolist()
    for i, name in enumerate(("entry_price", "exit_price", "qty", "pnl", "ret"), start=2):
        assert getattr(decoded, name).tolist() == table[rows, i].astype(np.float32).astype(np.float64).tolist()
    result, candles = _backtest()
    assert result.trade_table is not None and len(result.trade_table) == len(result.trades or [])
    stored = decode_trades(artifacts(result, candles))  # a backtest's artifacts keep its trades (fewer than 50 here)
    assert stored is not None and result.trades is not None and stored.total == len(result.trades)
    assert stored.entry_bar.tolist() == result.trades.entry_bar.tolist() and stored.reasons() == result.trades.reasons()


def test_no_trades_and_missing_artifacts() -> None:
    decoded = decode_trades({"trades": table_artifact(np.zeros((0, 8)))})
    assert decoded is not None and decoded.total == 0 and len(decoded) == 0
    assert decode_equity({}) is None and decode_trades({}) is None
    assert decode_equity({"equity": {"v": 99}}) is None  # a future format is ignored, not misread


def test_artifacts_stay_a_few_kilobytes() -> None:
    result, candles = _backtest(n=43_200)
    extra = artifacts(result, candles)
    size = len(canonical_json(extra))  # what the stores keep, inside the record's JSON
    points, trades = extra["equity"]["k"], extra["trades"]["k"]
    assert 450 < points <= MAX_POINTS and trades == MAX_TRADES
    # 6 bytes a point and 29 a trade, base64 (4/3), plus the keys.
    assert extra["equity"]["iw"] == 2
    assert size == pytest.approx((points * 6 + trades * 29) * 4 / 3, abs=300)
    assert size < 6_500


def test_every_result_of_a_sweep_carries_its_curve_and_trades(results: Results) -> None:
    with results.store() as store:
        records = list(store.iter_results())
    backtests = [r for r in records if r.kind == "backtest"]
    assert len(backtests) == results.total
    for record in backtests:
        curve, trades = decode_equity(record.extra), decode_trades(record.extra)
        assert curve is not None and trades is not None
        assert curve.bars == record.bars and len(curve.ts) <= MAX_POINTS
        assert trades.total == record.metrics["trades"] and len(trades) == min(trades.total, MAX_TRADES)
        assert curve.equity[-1] == pytest.approx(record.capital * (1 + record.metrics["total_return"]), rel=1e-6)
    assert any(decode_trades(r.extra).total > MAX_TRADES for r in backtests)  # the cap was exercised
