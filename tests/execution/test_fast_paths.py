"""The speed work changes no result: each fast path against the plain definition it replaces, exactly."""

from __future__ import annotations

import hashlib
import math
import random

import numpy as np
import pytest

from backfarm._util.ids import canonical_json
from backfarm.core import results as model
from backfarm.core.candles import Candles
from backfarm.core.costs import Costs
from backfarm.core.results import METRICS, ResultRecord
from backfarm.engine import downsample, kernel
from backfarm.engine.backtest import run_backtest
from backfarm.execution.local import plan_batches
from backfarm.strategies.builtins import Breakout, MaCrossover, MeanReversion, Momentum, Volatility
from backfarm.strategies.indicators import Indicators
from backfarm.sweeps.expand import expand
from backfarm.sweeps.spec import SweepSpec

# --- result hash and rounding -------------------------------------------------------------------------------------


def plain_round(value: float | int | None) -> float | int | None:
    if value is None or isinstance(value, int):
        return value
    if not math.isfinite(value):
        return None
    return float(f"{value:.12g}")


def plain_hash(record: ResultRecord) -> str:
    payload = {
        "metrics": {k: plain_round(record.metrics.get(k)) for k in METRICS},
        "candles": record.candles_checksum,
        "engine": record.engine_version,
    }
    return hashlib.blake2b(canonical_json(payload).encode(), digest_size=16).hexdigest()


EDGE = [None, 0, 7, True, 0.0, -0.0, 5e-324, -1e-300, 1.7976931348623157e308, math.inf, -math.inf, math.nan,
        0.1, 1 / 3, 999999999999.5, 123456789012.5, np.float64(2 / 3)]  # fmt: skip


def test_result_hash_and_rounding_match_their_definitions() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        metrics = {}
        for name in METRICS:
            r = rng.random()
            if r < 0.3:
                metrics[name] = rng.choice(EDGE)
            elif r < 0.9:
                metrics[name] = plain_round(rng.uniform(-1e4, 1e4)) if rng.random() < 0.5 else rng.uniform(-5, 5)
        record = ResultRecord("j", "s", "1", {}, "BTC-USD", "1m", "a", "b", "synthetic", {}, 1.0, metrics,
                              rng.choice(["c0ffee", 'q"uote', "é"]), "1", 10)  # fmt: skip
        assert record.result_hash == plain_hash(record)
        for value in metrics.values():  # twice: the second call of each may come from the cache
            for _ in range(2):
                got, want = model.round_metric(value), plain_round(value)
                assert type(got) is type(want)
                assert got == want or (got != got and want != want)
                if isinstance(want, float):
                    assert math.copysign(1.0, got) == math.copysign(1.0, want)  # type: ignore[arg-type]


def test_a_metric_the_fast_hash_cannot_take_fails_like_the_definition() -> None:
    record = ResultRecord("j", "s", "1", {}, "X", "1m", "a", "b", "synthetic", {}, 1.0, {"sharpe": "high"}, "c", "1", 1)
    with pytest.raises(TypeError):
        _ = record.result_hash


# --- the kernel's hot-path pieces ---------------------------------------------------------------------------------


def plain_next_change(x: np.ndarray, start: int, prev: float) -> int:
    for s in range(start, len(x)):
        if kernel._clean_target(x[s]) != prev:
            return s
    return len(x)


def test_next_change_matches_a_plain_scan() -> None:
    rng = np.random.default_rng(1)
    values = np.array([0.0, 0.0, 1.0, 0.5, np.nan, 2.0, -1.0])
    for _ in range(200):
        runs = rng.integers(1, 150, size=60)
        x = np.repeat(values[rng.integers(0, len(values), size=60)], runs)
        for start in (0, 1, int(rng.integers(0, len(x))), len(x) - 1):
            prev = kernel._clean_target(x[start - 1]) if start else 0.0
            assert kernel._next_change(x, start, prev) == plain_next_change(x, start, prev)
        changes, prev = 0, 0.0
        for value in x:
            cleaned = kernel._clean_target(value)
            changes += cleaned != prev
            prev = cleaned
        found, prev, s = 0, 0.0, kernel._next_change(x, 0, 0.0)  # hop from change to change, as the kernel does
        while s < len(x):
            found, prev = found + 1, kernel._clean_target(x[s])
            s = kernel._next_change(x, s + 1, prev)
        assert found == changes


def plain_first_exit(o, h, lo, start, end, stop, target) -> int:  # type: ignore[no-untyped-def]
    for u in range(start, end):
        if kernel._bad(o[u]) or kernel._bad(h[u]) or kernel._bad(lo[u]):
            return u
        if min(o[u], lo[u]) <= stop or max(o[u], h[u]) >= target:
            return u
    return end


def test_first_exit_matches_a_plain_scan() -> None:
    rng = np.random.default_rng(4)
    n = 5000
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    o = np.r_[close[0], close[:-1]]
    h, lo = np.maximum(o, close) * 1.001, np.minimum(o, close) * 0.999
    for _ in range(300):
        arrays = [a.copy() for a in (o, h, lo)]
        if rng.random() < 0.5:
            arrays[int(rng.integers(0, 3))][int(rng.integers(0, n))] = rng.choice([np.nan, np.inf, 0.0, -1.0])
        stop = float(rng.choice([-1.0, rng.uniform(80, 100)]))
        target = float(rng.choice([np.inf, rng.uniform(100, 125)]))
        start = int(rng.integers(0, n))
        end = int(rng.integers(start, n + 1))
        want = plain_first_exit(*arrays, start, end, stop, target)
        assert kernel._first_exit(*arrays, start, end, stop, target) == want


def test_mark_run_folds_like_mark_bar_by_bar() -> None:
    rng = np.random.default_rng(2)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, 3000)))
    close[500:520] = close[499]  # unchanged equity: r = 0 exactly
    empty, no_curve = np.empty(0), np.empty((0, 4))
    for cash, qty in ((0.0, 3.0), (250.0, 1.5)):
        start = kernel._stats_start(1000.0)
        expected = start
        for c in close[10:2900]:
            expected = kernel._mark(expected, cash + qty * c)
        ok, got = kernel._mark_run(close, 10, 2900, cash, qty, start, empty, False, no_curve, 0)
        assert ok and got == expected
        curve, size = downsample.new_curve(len(close), 60)
        ok, got = kernel._mark_run(close, 10, 2900, cash, qty, start, empty, False, curve, size)
        assert ok and got == expected  # keeping a curve changes no statistic
    for bad in (np.nan, np.inf, 0.0, -5.0):
        broken = close.copy()
        broken[1000] = bad
        ok, _ = kernel._mark_run(broken, 10, 2900, 0.0, 3.0, kernel._stats_start(1000.0), empty, False, no_curve, 0)
        assert not ok


def test_mark_run_keeps_each_buckets_first_extremes() -> None:
    rng = np.random.default_rng(4)
    close = np.round(100.0 + np.cumsum(rng.normal(0, 0.3, 2000)), 1)  # rounded: ties inside buckets
    equity = 50.0 + 2.0 * close
    curve, size = downsample.new_curve(len(close), 40)
    kernel._mark_run(close, 7, 1990, 50.0, 2.0, kernel._stats_start(1000.0), np.empty(0), False, curve, size)
    for b in range(len(curve)):
        lo, hi = max(1 + b * size, 7), min(1 + (b + 1) * size, 1990, len(close) - 1)
        if lo >= hi:
            assert curve[b, kernel.CURVE_LOW_BAR] == -1.0  # untouched
            continue
        part = equity[lo:hi]
        assert curve[b, kernel.CURVE_LOW_BAR] == lo + int(np.argmin(part))
        assert curve[b, kernel.CURVE_HIGH_BAR] == lo + int(np.argmax(part))
        assert curve[b, kernel.CURVE_LOW] == part.min() and curve[b, kernel.CURVE_HIGH] == part.max()


def _exposures(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Flat, always long, a few long stretches, flipping often, partial targets."""
    few = np.zeros(n)
    for start in rng.integers(0, n, 6):
        few[start : start + int(rng.integers(1, n // 3 + 2))] = 1.0
    flips = (rng.random(n) < 0.3).astype(float)
    partial = np.round(rng.random(n) * 4) / 4
    return [np.zeros(n), np.ones(n), few, flips, partial]


@pytest.mark.parametrize("n", [7, 400, 500, 501, 502, 503, 997, 1000, 4321, 43_200])
def test_a_curve_kept_in_the_kernel_is_the_bucketing_of_the_full_curve(n: int) -> None:
    from backfarm.engine.artifacts import MAX_POINTS, artifacts
    from backfarm.engine.downsample import downsample_minmax

    rng = np.random.default_rng(n)
    data = candles(n, seed=n)
    prices = (data.open[:n], data.high[:n], data.low[:n], data.close[:n])
    for exposure in _exposures(n, rng):
        for costs in (Costs(), Costs(stop_loss_bps=40.0, take_profit_bps=60.0), Costs(take_profit_bps=30.0)):
            full = run_backtest(*prices, exposure, costs, 1000.0, 525600.0, record=True)
            cut = run_backtest(*prices, exposure, costs, 1000.0, 525600.0, record=True, curve_points=MAX_POINTS)
            assert cut.metrics == full.metrics and cut.final_equity == full.final_equity
            assert np.array_equal(cut.trade_table, full.trade_table)  # type: ignore[arg-type]
            assert full.equity is not None
            if n <= MAX_POINTS:  # nothing to cut: the kernel records every bar
                assert cut.curve is None and np.array_equal(cut.equity, full.equity)  # type: ignore[arg-type]
            else:
                assert cut.equity is None and cut.curve is not None
                keep = downsample_minmax(full.equity)
                assert np.array_equal(cut.curve[0], keep)
                assert np.array_equal(cut.curve[1], full.equity[keep])
            assert artifacts(cut, data) == artifacts(full, data)


def test_curve_points_below_six_are_refused() -> None:
    from backfarm.errors import ValidationError

    close = np.linspace(100.0, 120.0, 50)
    with pytest.raises(ValidationError, match="curve_points"):
        run_backtest(close, close, close, close, np.ones(50), Costs(), 1e3, 525600.0, record=True, curve_points=5)


def test_a_bad_close_inside_a_held_stretch_is_still_reported_at_its_bar() -> None:
    close = np.linspace(100.0, 120.0, 400)
    close[250] = np.nan
    from backfarm.errors import DataError

    with pytest.raises(DataError, match="bar 250"):
        run_backtest(close, close, close, close, np.ones(400), Costs(), 1000.0, 525600.0)


def test_recorded_trades_do_not_share_the_scratch_table() -> None:
    close = 100.0 + np.sin(np.arange(600) / 7.0)
    first = run_backtest(close, close, close, close, (np.arange(600) // 20) % 2 * 1.0, Costs(), 1e3, 525600.0,
                         record=True)  # fmt: skip
    kept = first.trades.pnl.copy()  # type: ignore[union-attr]
    run_backtest(close, close, close, close, (np.arange(600) // 9) % 2 * 1.0, Costs(), 1e3, 525600.0, record=True)
    assert np.array_equal(first.trades.pnl, kept)  # type: ignore[union-attr]


# --- strategies: the scanning latches against the bar-by-bar state machines ---------------------------------------


def candles(n: int = 6000, seed: int = 3) -> Candles:
    rng = np.random.default_rng(seed)
    close = 20_000.0 * np.exp(np.cumsum(rng.normal(0.0, 2e-3, n)))
    close[n // 6 : n // 5] = close[n // 6 - 1]  # a flat stretch: no z-score, zero deviations
    prev = np.r_[close[:1], close[:-1]]
    high = np.maximum(prev, close) * (1 + rng.uniform(0, 2e-3, n))
    low = np.minimum(prev, close) * (1 - rng.uniform(0, 2e-3, n))
    ts = np.arange(n, dtype=np.int64) * 60_000_000_000
    return Candles("synthetic", "BTC-USD", "1m", ts, prev, high, low, close, np.ones(n))


def latch(enter: np.ndarray, leave: np.ndarray, first: int = 0) -> np.ndarray:
    out, long = np.zeros(len(enter)), False
    for t in range(first, len(enter)):
        long = not leave[t] if long else bool(enter[t])
        out[t] = float(long)
    return out


def test_builtin_exposures_match_their_plain_rules() -> None:
    ind = Indicators(candles())
    c = ind.close
    prev = np.r_[np.nan, c[:-1]]
    with np.errstate(invalid="ignore"):
        for p in MeanReversion.default_grid():
            z = ind.zscore(int(p["window"]))
            want = latch(z < -p["entry_z"], z > -p["exit_z"])
            assert np.array_equal(MeanReversion().exposure(ind, p), want)
        for p in Breakout.default_grid():
            upper = np.r_[np.nan, ind.highest(int(p["entry"]))[:-1]]
            lower = np.r_[np.nan, ind.lowest(int(p["exit"]))[:-1]]
            assert np.array_equal(Breakout().exposure(ind, p), latch(c > upper, c < lower, first=1))
        for p in Volatility.default_grid():
            tr, sma = ind.true_range(), ind.sma(int(p["exit_window"]))
            atr_prev = np.r_[np.nan, ind.atr(int(p["window"]))[:-1]]
            enter = (tr > p["k"] * atr_prev) & (c > prev) & (c >= sma)
            assert np.array_equal(Volatility().exposure(ind, p), latch(enter, c < sma, first=1))
        for p in MaCrossover.default_grid():
            want = (ind.sma(int(p["fast"])) > ind.sma(int(p["slow"]))).astype(np.float64)
            assert np.array_equal(MaCrossover().exposure(ind, p), want)
        for p in Momentum.default_grid():
            want = (ind.roc(int(p["lookback"])) > p["threshold"]).astype(np.float64)
            assert np.array_equal(Momentum().exposure(ind, p), want)


# --- the executor's batches and the store's pre-encoded rows -------------------------------------------------------


def test_plan_batches_groups_by_window_and_strategy_and_keeps_every_job_once() -> None:
    jobs = list(expand(SweepSpec(grid=True, source="synthetic", days=3)).jobs)
    batches = plan_batches(jobs, workers=2)
    flat = [job for batch in batches for job in batch.jobs]
    assert sorted(j.job_id for j in flat) == sorted(j.job_id for j in jobs)
    for batch in batches:
        assert len({(j.data_key, j.strategy) for j in batch.jobs}) == 1
    # 1,285 jobs on 2 workers: about 8 batches per worker, so every (symbol, strategy) group of ≤ 81 is one batch
    assert len(batches) == 25
    small = plan_batches(jobs, workers=16)  # more workers: groups cut into near-equal pieces of at most 11 jobs
    assert max(len(b.jobs) for b in small) <= 11 and min(len(b.jobs) for b in small) >= 8
