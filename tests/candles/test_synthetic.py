"""The synthetic source: deterministic, range-independent, and shaped like real crypto candles."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from backfarm._util.time import NS_PER_SECOND
from backfarm.candles.sources import synthetic
from backfarm.candles.sources.synthetic import SyntheticSource, month_bars, profile
from backfarm.core.candles import COLUMNS
from backfarm.errors import ValidationError

NOW = datetime(2025, 6, 15, 12, 0, 30, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture
def src() -> SyntheticSource:
    return SyntheticSource(seed=0, clock=lambda: NOW)


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b) == set(COLUMNS)
    for c in COLUMNS:
        np.testing.assert_array_equal(a[c], b[c], err_msg=c)


def log_returns(bars: dict[str, np.ndarray]) -> np.ndarray:
    return np.diff(np.log(bars["close"]))


def test_deterministic_per_seed(src: SyntheticSource) -> None:
    a = src.fetch("BTC-USD", "5m", utc(2024, 2, 3), utc(2024, 2, 5))
    b = SyntheticSource(seed=0, clock=lambda: NOW).fetch("BTC-USD", "5m", utc(2024, 2, 3), utc(2024, 2, 5))
    other = SyntheticSource(seed=1, clock=lambda: NOW).fetch("BTC-USD", "5m", utc(2024, 2, 3), utc(2024, 2, 5))
    assert_same(a, b)
    assert not np.array_equal(a["close"], other["close"])
    assert len(a["ts"]) == 2 * 288


@pytest.mark.parametrize("gran", ["1m", "1h"])
def test_range_independent_across_a_month_boundary(src: SyntheticSource, gran: str) -> None:
    a, b, c = utc(2024, 1, 30, 7), utc(2024, 2, 1, 13, 30), utc(2024, 2, 2, 5)
    whole = src.fetch("ETH-USD", gran, a, c)
    parts = [src.fetch("ETH-USD", gran, a, b), src.fetch("ETH-USD", gran, b, c)]
    assert_same(whole, {k: np.concatenate([p[k] for p in parts]) for k in COLUMNS})


def test_months_join_and_granularities_agree_at_daily_level(src: SyntheticSource) -> None:
    minute = src.fetch("SOL-USD", "1m", utc(2024, 3, 30), utc(2024, 4, 3))
    daily = src.fetch("SOL-USD", "1d", utc(2024, 3, 30), utc(2024, 4, 3))
    six_hours = src.fetch("SOL-USD", "6h", utc(2024, 3, 30), utc(2024, 4, 3))
    # open = previous close exactly, including across the March/April boundary
    np.testing.assert_array_equal(minute["open"][1:], minute["close"][:-1])
    midnight = minute["ts"] % (86400 * NS_PER_SECOND) == 0
    np.testing.assert_array_equal(minute["open"][midnight], daily["open"])
    np.testing.assert_array_equal(minute["close"][1439::1440], daily["close"])
    np.testing.assert_array_equal(six_hours["close"][3::4], daily["close"])


@pytest.mark.parametrize("symbol", ["BTC-USD", "DOGE-USD", "FOO1-EUR"])
@pytest.mark.parametrize("gran", ["1m", "15m", "1d"])
def test_bars_are_valid_ohlcv(src: SyntheticSource, symbol: str, gran: str) -> None:
    days = 3 if gran != "1d" else 120
    bars = src.fetch(symbol, gran, utc(2023, 11, 1), utc(2023, 11, 1) + timedelta(days=days))
    o, h, lo, c, v = (bars[k] for k in COLUMNS[1:])
    assert bars["ts"].dtype == np.int64 and all(bars[k].dtype == np.float64 for k in COLUMNS[1:])
    assert np.all(np.diff(bars["ts"]) == synthetic.granularity_seconds(gran) * NS_PER_SECOND)
    assert np.all(lo > 0) and np.all(v > 0)
    assert np.all(lo <= np.minimum(o, c)) and np.all(h >= np.maximum(o, c))
    assert np.all(h > lo)
    np.testing.assert_array_equal(o[1:], c[:-1])


def test_only_closed_bars_are_returned(src: SyntheticSource) -> None:
    minute = src.fetch("BTC-USD", "1m", utc(2025, 6, 15, 11), utc(2025, 6, 16))
    hourly = src.fetch("BTC-USD", "1h", utc(2025, 6, 15), utc(2025, 6, 16))
    # NOW is 12:00:30: the 11:59 minute bar has closed, the 12:00 one has not; the 11:00 hour bar has closed.
    assert minute["ts"][-1] == int(utc(2025, 6, 15, 11, 59).timestamp()) * NS_PER_SECOND
    assert len(minute["ts"]) == 60
    assert hourly["ts"][-1] == int(utc(2025, 6, 15, 11).timestamp()) * NS_PER_SECOND
    assert len(src.fetch("BTC-USD", "1d", utc(2025, 6, 15), utc(2025, 6, 16))["ts"]) == 0


def test_history_starts_2017(src: SyntheticSource) -> None:
    assert src.first_available("POL-USD", "1h") == utc(2017, 1, 1)
    bars = src.fetch("POL-USD", "1d", utc(2016, 12, 1), utc(2017, 1, 3))
    assert bars["ts"].tolist() == [int(utc(2017, 1, d).timestamp()) * NS_PER_SECOND for d in (1, 2)]


def test_validate_symbol(src: SyntheticSource) -> None:
    for ok in ("BTC-USD", "POL-USD", "FOO1-EUR"):
        src.validate_symbol(ok)
    with pytest.raises(ValidationError, match=r"did you mean 'BTC-USD'\?"):
        src.validate_symbol("btc-usd")
    for bad in ("BTCUSD", "BTC-USD-X", "", "BTC USD"):
        with pytest.raises(ValidationError, match="BASE-QUOTE"):
            src.validate_symbol(bad)
    with pytest.raises(ValidationError, match="granularity"):
        src.fetch("BTC-USD", "3m", utc(2024, 1, 1), utc(2024, 1, 2))


def test_profiles_table_and_hash() -> None:
    assert profile("BTC-USD").annual_vol < profile("ETH-USD").annual_vol < profile("SOL-USD").annual_vol
    assert 0.5 <= profile("BTC-USD").annual_vol <= 0.6 and 0.9 <= profile("SOL-USD").annual_vol <= 1.0
    assert profile("BTC-EUR").price == pytest.approx(40_000 / 1.08)
    unknown = profile("FOO1-EUR")
    assert unknown == profile("FOO1-EUR") != profile("FOO2-EUR")
    assert 0.7 <= unknown.annual_vol <= 1.3 and unknown.price > 0


def annual_vol(bars: dict[str, np.ndarray], bar_seconds: int) -> float:
    return float(np.std(log_returns(bars)) * math.sqrt(365 * 86400 / bar_seconds))


def test_btc_is_calmer_than_sol(src: SyntheticSource) -> None:
    btc = annual_vol(src.fetch("BTC-USD", "1h", utc(2022, 1, 1), utc(2024, 1, 1)), 3600)
    sol = annual_vol(src.fetch("SOL-USD", "1h", utc(2022, 1, 1), utc(2024, 1, 1)), 3600)
    assert 0.40 < btc < 0.70
    assert 0.75 < sol < 1.20
    assert btc < sol


def test_fat_tails_and_volatility_clustering(src: SyntheticSource) -> None:
    r = log_returns(src.fetch("BTC-USD", "5m", utc(2023, 5, 1), utc(2023, 7, 1)))
    kurtosis = np.mean((r - r.mean()) ** 4) / np.var(r) ** 2
    assert kurtosis > 4.0  # normal returns give 3
    hourly = np.abs(log_returns(src.fetch("BTC-USD", "1h", utc(2022, 1, 1), utc(2024, 1, 1))))
    assert np.corrcoef(hourly[:-1], hourly[1:])[0, 1] > 0.1
    daily = np.abs(log_returns(src.fetch("BTC-USD", "1d", utc(2017, 1, 1), utc(2025, 1, 1))))
    assert np.corrcoef(daily[:-1], daily[1:])[0, 1] > 0.05


def test_volume_follows_absolute_return(src: SyntheticSource) -> None:
    bars = src.fetch("ETH-USD", "15m", utc(2024, 1, 1), utc(2024, 3, 1))
    r = np.abs(np.log(bars["close"] / bars["open"]))
    assert np.corrcoef(r, bars["volume"])[0, 1] > 0.2


def variance_ratio(r: np.ndarray, k: int) -> float:
    """Var of k-day sums over k × var of daily returns: > 1 trending, < 1 mean-reverting."""
    sums = np.convolve(r, np.ones(k), mode="valid")
    return float(np.var(sums) / (k * np.var(r)))


def test_regimes_trend_and_range() -> None:
    anchor = synthetic._anchor("BTC-USD", 0)
    regime = anchor.regime[: 365 * 30]
    r = np.diff(anchor.logp[: 365 * 30 + 1])
    assert 0.3 < np.mean(regime == 0) < 0.7  # both kinds of stretch occur, in comparable amounts
    trending = r[regime != 0]
    ranging = r[regime == 0]
    # Within trends, returns keep their sign (drift); within ranges they revert.
    assert variance_ratio(trending, 10) > 1.2
    assert variance_ratio(ranging, 10) < 0.9
    assert abs(np.mean(r[regime == 1]) - 0.3 * 0.55 / math.sqrt(365)) < 0.004
    assert np.mean(r[regime == 2]) < 0


def test_one_month_of_minutes_is_fast() -> None:
    month_bars("BTC-USD", "1m", 0, np.datetime64("2024-01", "M"))  # warm-up: numba and the daily anchors
    best = min(_timed(lambda: month_bars("BTC-USD", "1m", 0, np.datetime64("2024-05", "M"))) for _ in range(3))
    assert best < 0.1


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start
