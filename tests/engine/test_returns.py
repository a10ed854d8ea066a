"""Moments of the bar returns and block (daily) returns: hand-computed cases, the kernel against the obvious
computation from a full equity curve, and the blocks' arithmetic against grouping bars by UTC day."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfarm.core.costs import Costs
from backfarm.core.results import MOMENTS
from backfarm.engine.backtest import run_backtest
from backfarm.engine.returns import (
    DAY_SECONDS,
    MAX_BLOCKS,
    Blocks,
    block_returns,
    blocks_for,
    daily_artifact,
    decode_daily,
    reference_moments,
)
from backfarm.errors import ValidationError

FREE = Costs(fee_bps=0.0, spread_bps=0.0)
HOUR = 3600


def _run(opens: list[float], closes: list[float], blocks: Blocks | None = None) -> tuple[dict, np.ndarray | None]:
    o, c = np.array(opens, float), np.array(closes, float)
    result = run_backtest(
        o, np.maximum(o, c), np.minimum(o, c), c, np.ones(len(o)), FREE, 100.0, 16.0, record=True, blocks=blocks
    )
    assert result.moments is not None
    return result.moments, result.block_returns


def test_moments_and_daily_returns_of_a_hand_computed_series() -> None:
    # The series of test_metrics' losing round trip: E = 100, 110, 55, 66, so r = [0, 0.1, −0.5, 0.2].
    # mean = −0.05; deviations 0.05, 0.15, −0.45, 0.25:
    #   m2 = 0.29 / 4 = 0.0725; std = √(0.29 / 3) = 0.31091263510296
    #   m3 = (0.000125 + 0.003375 − 0.091125 + 0.015625) / 4 = −0.018 → skew = −0.018 / 0.0725^1.5
    #   m4 = (0.00000625 + 0.00050625 + 0.04100625 + 0.00390625) / 4 = 0.01135625 → kurt = m4 / 0.0725²
    # Bars every 12 h from 12:00 on day 0: bar 0 is day 0, bars 1–2 day 1, bar 3 day 2, so the days end with
    # E = 100, 55, 66: daily returns 0, −0.45, 0.2.
    blocks = blocks_for(12 * HOUR, 12 * HOUR, 4)
    assert blocks == Blocks(t0=0, days=1, first_end=0, bars=2, count=3)
    moments, daily = _run([10, 10, 11, 5.5], [10, 11, 5.5, 6.6], blocks)
    assert list(moments) == list(MOMENTS) and all(type(v) is float for v in moments.values())
    assert moments["mean"] == pytest.approx(-0.05, rel=1e-12)
    assert moments["std"] == pytest.approx(0.31091263510296, rel=1e-12)
    assert moments["skew"] == pytest.approx(-0.018 / 0.0725**1.5, rel=1e-9)  # −0.0180 / 0.0195212 = −0.92207...
    assert moments["skew"] == pytest.approx(-0.9220734, rel=1e-6)
    assert moments["kurt"] == pytest.approx(0.01135625 / 0.0725**2, rel=1e-9)  # 2.16052...
    assert moments["kurt"] == pytest.approx(2.1605232, rel=1e-6)
    assert daily is not None
    assert daily.tolist() == pytest.approx([0.0, -0.45, 0.2], rel=1e-12, abs=1e-15)


def test_returns_that_do_not_vary_have_no_skew_or_kurtosis() -> None:
    # Never invested: every r is 0, so mean = std = 0 and the shape of the distribution is undefined.
    o = np.full(50, 10.0)
    result = run_backtest(o, o, o, o, np.zeros(50), FREE, 100.0, 365.0, blocks=blocks_for(0, 3600, 50))
    assert result.moments == {"mean": 0.0, "std": 0.0, "skew": None, "kurt": None}
    assert result.block_returns is not None and result.block_returns.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("first_open", "bar", "n", "expected"),
    [
        (0, 60, 1440, Blocks(0, 1, 1439, 1440, 1)),  # one whole day of minutes
        (0, 60, 1441, Blocks(0, 1, 1439, 1440, 2)),  # one minute into the next day
        (DAY_SECONDS - 60, 60, 2, Blocks(0, 1, 0, 1440, 2)),  # the last minute of a day, then the first of the next
        (5 * DAY_SECONDS + 6 * HOUR, 6 * HOUR, 8, Blocks(5 * DAY_SECONDS, 1, 2, 4, 3)),  # 18h, 24h, 6h
        (0, DAY_SECONDS, MAX_BLOCKS, Blocks(0, 1, 0, 1, MAX_BLOCKS)),  # daily bars up to the cap: one block each
        (0, DAY_SECONDS, MAX_BLOCKS + 1, Blocks(0, 2, 1, 2, 513)),  # one more day: blocks of two days
    ],
)
def test_blocks_by_hand(first_open: int, bar: int, n: int, expected: Blocks) -> None:
    assert blocks_for(first_open, bar, n) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([60, 300, 900, 1800, 3600, 7200, 21600, 86400]),
    st.integers(0, 2_000_000),
    st.integers(1, 3_000),
)
def test_blocks_end_with_the_last_bar_of_each_block_of_days(bar: int, first_bar: int, n: int) -> None:
    first_open = first_bar * bar
    blocks = blocks_for(first_open, bar, n)
    opens = first_open + np.arange(n, dtype=np.int64) * bar
    block_of = (opens - blocks.t0) // (blocks.days * DAY_SECONDS)
    ends = [int(np.nonzero(block_of == b)[0][-1]) for b in np.unique(block_of)]
    assert blocks.count == len(ends) <= MAX_BLOCKS
    assert ends == [blocks.first_end + b * blocks.bars for b in range(blocks.count - 1)] + [n - 1]
    assert blocks.t0 % DAY_SECONDS == 0 and blocks.t0 <= first_open < blocks.t0 + DAY_SECONDS
    assert blocks.days == 1 or math.ceil((opens[-1] - blocks.t0 + 1) / DAY_SECONDS) > MAX_BLOCKS


@pytest.mark.parametrize("seed", range(16))
def test_kernel_moments_and_blocks_match_a_full_equity_curve(seed: int) -> None:
    """Every path of the kernel (flat stretches, held runs, fills, stops, the curve kept or not) records the same
    block ends and power sums as the obvious computation over every bar's equity."""
    rng = np.random.default_rng(300 + seed)
    n = int(rng.integers(2, 6000))
    bar = int(rng.choice([60, 300, 3600, 86400]))
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate(([50.0], close[:-1]))
    high, low = np.maximum(open_, close) * 1.003, np.minimum(open_, close) * 0.997
    exposure = np.repeat(rng.choice([0.0, 1.0, 0.5, np.nan], n), rng.integers(1, 200, n))[:n]
    costs = Costs(stop_loss_bps=200.0, take_profit_bps=300.0) if seed % 2 else Costs()
    blocks = blocks_for(int(rng.integers(0, 10**6)) * bar, bar, n)
    full = run_backtest(open_, high, low, close, exposure, costs, 1000.0, 365.0, record=True, blocks=blocks)
    assert full.equity is not None and full.moments is not None and full.block_returns is not None
    returns = full.equity / np.concatenate(([1000.0], full.equity[:-1])) - 1.0
    for name, want in reference_moments(returns).items():
        got = full.moments[name]
        assert (got is None) == (want is None), name
        if want is not None:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-15), name
    ends = full.equity[[*(blocks.first_end + b * blocks.bars for b in range(blocks.count - 1)), n - 1]]
    assert np.array_equal(full.block_returns, block_returns(ends, 1000.0))
    assert float(np.prod(1.0 + full.block_returns) - 1.0) == pytest.approx(full.metrics["total_return"], abs=1e-9)
    for record, points in ((True, 100), (False, 0)):  # the curve's buckets, and no recording at all
        other = run_backtest(
            open_, high, low, close, exposure, costs, 1000.0, 365.0, record=record, curve_points=points, blocks=blocks
        )
        assert other.moments == full.moments and other.metrics == full.metrics
        assert other.block_returns is not None and np.array_equal(other.block_returns, full.block_returns)


def test_blocks_that_do_not_fit_the_window_are_refused() -> None:
    o = np.full(10, 10.0)
    with pytest.raises(ValidationError, match="blocks"):
        run_backtest(o, o, o, o, np.ones(10), FREE, 100.0, 365.0, blocks=Blocks(0, 1, 5, 5, 3))  # ends at bar 10
    with pytest.raises(ValidationError, match="blocks"):
        run_backtest(o, o, o, o, np.ones(10), FREE, 100.0, 365.0, blocks=Blocks(0, 1, 2, 0, 2))
    whole = run_backtest(o, o, o, o, np.ones(10), FREE, 100.0, 365.0, blocks=Blocks(0, 1, 99, 99, 1))
    assert whole.block_returns is not None and len(whole.block_returns) == 1


def test_the_daily_artifact_round_trips_exactly() -> None:
    returns = np.array([0.01, -0.02, 1e-300, 0.0])
    blocks = blocks_for(3 * DAY_SECONDS + 60, 60, 4 * 1440)
    for raw in (True, False):
        art = daily_artifact(returns, blocks, raw=raw)
        assert art["v"] == 1 and art["t0"] == 3 * DAY_SECONDS and art["k"] == 1
        starts, back = decode_daily(art)
        assert back.tolist() == returns.tolist()
        assert starts.tolist() == [3 * DAY_SECONDS + i * DAY_SECONDS for i in range(4)]
