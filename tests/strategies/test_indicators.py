"""Indicators: exact values on a tiny hand-computed series, agreement with plain loops, causality, memoization."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backfarm.core.candles import Candles
from backfarm.errors import ValidationError
from backfarm.strategies.indicators import Indicators
from tests.strategies.candles import make_candles

NAN = math.nan
WINDOWS = (1, 2, 3, 7, 50, 400)


def random_candles(n: int = 1500, seed: int = 7, level: float = 50_000.0) -> Candles:
    rng = np.random.default_rng(seed)
    close = level * np.exp(np.cumsum(rng.normal(0.0, 2e-3, n)))
    close[300:340] = close[299]  # a gap-filled flat stretch
    prev = np.r_[close[:1], close[:-1]]
    high = np.maximum(prev, close) * (1 + rng.uniform(0, 1e-3, n))
    low = np.minimum(prev, close) * (1 - rng.uniform(0, 1e-3, n))
    return make_candles(close, high, low)


# --- plain-loop references -------------------------------------------------------------------------------------


def ref_window(x: np.ndarray, w: int, fn) -> np.ndarray:
    return np.array([fn(x[t - w + 1 : t + 1]) if t >= w - 1 else NAN for t in range(x.size)])


def ref_mean(v: np.ndarray) -> float:
    return sum(float(a) for a in v) / len(v)


def ref_std(v: np.ndarray) -> float:
    m = ref_mean(v)
    return math.sqrt(sum((float(a) - m) ** 2 for a in v) / len(v))


def ref_ema(x: np.ndarray, w: int) -> np.ndarray:
    out = np.full(x.size, NAN)
    if x.size < w:
        return out
    out[w - 1] = ref_mean(x[:w])
    alpha = 2.0 / (w + 1)
    for t in range(w, x.size):
        out[t] = alpha * x[t] + (1 - alpha) * out[t - 1]
    return out


def ref_rsi(c: np.ndarray, w: int) -> np.ndarray:
    out = np.full(c.size, NAN)
    gains = [max(c[t] - c[t - 1], 0.0) for t in range(1, c.size)]
    losses = [max(c[t - 1] - c[t], 0.0) for t in range(1, c.size)]
    if c.size <= w:
        return out
    g, lo = sum(gains[:w]) / w, sum(losses[:w]) / w
    for t in range(w, c.size):
        if t > w:
            g = (g * (w - 1) + gains[t - 1]) / w
            lo = (lo * (w - 1) + losses[t - 1]) / w
        out[t] = (50.0 if g == 0 else 100.0) if lo == 0 else 100 - 100 / (1 + g / lo)
    return out


def ref_true_range(h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> np.ndarray:
    tr = [NAN] + [max(h[t] - lo[t], abs(h[t] - c[t - 1]), abs(lo[t] - c[t - 1])) for t in range(1, c.size)]
    return np.array(tr)


def ref_atr(h: np.ndarray, lo: np.ndarray, c: np.ndarray, w: int) -> np.ndarray:
    tr = ref_true_range(h, lo, c)
    out = np.full(c.size, NAN)
    if c.size <= w:
        return out
    out[w] = ref_mean(tr[1 : w + 1])
    for t in range(w + 1, c.size):
        out[t] = (out[t - 1] * (w - 1) + tr[t]) / w
    return out


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-9, atol: float = 0.0) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


# --- exact values on a tiny series -------------------------------------------------------------------------------

TINY = [1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0]


def test_tiny_series_exact_values() -> None:
    ind = Indicators(make_candles(TINY))  # high = close + 0.5, low = close - 0.5
    r = math.sqrt
    assert_close(ind.sma(3), np.array([NAN, NAN, 2, 3, 4, 13 / 3, 4]), rtol=1e-15)
    assert_close(ind.ema(3), np.array([NAN, NAN, 2, 3, 4, 4, 3.5]), rtol=1e-15)  # alpha 0.5, seeded with SMA
    assert_close(ind.stdev(3), np.array([NAN, NAN, r(2 / 3), r(2 / 3), r(2 / 3), r(2 / 9), r(2 / 3)]), rtol=1e-14)
    z = [NAN, NAN, 1 / r(2 / 3), 1 / r(2 / 3), 1 / r(2 / 3), (-1 / 3) / r(2 / 9), -1 / r(2 / 3)]
    assert_close(ind.zscore(3), np.array(z), rtol=1e-14)
    assert_close(ind.highest(3), np.array([NAN, NAN, 3.5, 4.5, 5.5, 5.5, 5.5]), rtol=0)
    assert_close(ind.lowest(3), np.array([NAN, NAN, 0.5, 1.5, 2.5, 3.5, 2.5]), rtol=0)
    assert_close(ind.roc(2), np.array([NAN, NAN, 2, 1, 2 / 3, 0, -0.4]), rtol=1e-15)
    # Wilder RSI(3): first averages over the changes +1 +1 +1 → no losses → 100; then gains 2/3, losses 1/3 → 66.67;
    # then 4/9 and 5/9 → RS 0.8 → 44.44.
    assert_close(ind.rsi(3), np.array([NAN, NAN, NAN, 100, 100, 100 - 100 / 3, 100 - 100 / 1.8]), rtol=1e-14)


def test_true_range_and_atr_exact_values() -> None:
    close = [10.0, 11.0, 12.0, 9.5]
    high = [10.5, 11.5, 12.5, 9.8]
    low = [9.5, 10.0, 11.0, 9.0]
    ind = Indicators(make_candles(close, high, low))
    # TR1 = max(1.5, 1.5, 0) = 1.5; TR2 = max(1.5, 1.5, 0) = 1.5; TR3 gaps down: max(0.8, |9.8-12|, |9-12|) = 3
    assert_close(ind.true_range(), np.array([NAN, 1.5, 1.5, 3.0]), rtol=1e-15)
    # ATR(2): mean(TR1, TR2) = 1.5 at bar 2, then (1.5 * 1 + 3) / 2 = 2.25
    assert_close(ind.atr(2), np.array([NAN, NAN, 1.5, 2.25]), rtol=1e-15)


def test_flat_windows_are_exact() -> None:
    # 0.1 is not representable: a plain running sum would give 0.1 ± 1 ulp and a tiny nonzero deviation.
    ind = Indicators(make_candles([0.1] * 30 + [0.2] + [0.1] * 30))
    sma, std, z = ind.sma(5), ind.stdev(5), ind.zscore(5)
    assert np.all(sma[4:30] == 0.1) and np.all(std[4:30] == 0.0) and np.all(np.isnan(z[:30]))
    assert np.all(sma[35:] == 0.1) and np.all(std[35:] == 0.0) and np.all(np.isnan(z[35:]))
    assert np.all(std[30:35] > 0) and np.all(np.isfinite(z[30:35]))
    assert np.all(ind.rsi(5)[5:30] == 50.0)  # no gains, no losses: neutral


# --- agreement with plain loops on random data -------------------------------------------------------------------


@pytest.mark.parametrize("w", WINDOWS)
def test_rolling_indicators_match_loops(w: int) -> None:
    candles = random_candles()
    ind = Indicators(candles)
    c, h, lo = ind.close, ind.high, ind.low
    scale = float(np.max(c))
    mean = ref_window(c, w, ref_mean)
    std = ref_window(c, w, ref_std)
    assert_close(ind.sma(w), mean, rtol=1e-12)
    assert_close(ind.stdev(w), std, rtol=1e-7, atol=1e-9 * scale)
    z = ind.zscore(w)
    expected_z = np.where(std > 1e-9 * scale, (c - mean) / np.where(std > 0, std, 1.0), NAN)
    assert_close(z, expected_z, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ind.highest(w), ref_window(h, w, max))
    np.testing.assert_array_equal(ind.lowest(w), ref_window(lo, w, min))
    roc = np.array([c[t] / c[t - w] - 1 if t >= w else NAN for t in range(c.size)])
    assert_close(ind.roc(w), roc, rtol=1e-15)


@pytest.mark.parametrize("w", WINDOWS)
def test_recursive_indicators_match_loops(w: int) -> None:
    ind = Indicators(random_candles())
    c, h, lo = ind.close, ind.high, ind.low
    assert_close(ind.ema(w), ref_ema(c, w), rtol=1e-12)
    assert_close(ind.rsi(w), ref_rsi(c, w), rtol=1e-9, atol=1e-9)
    assert_close(ind.true_range(), ref_true_range(h, lo, c), rtol=1e-15)
    assert_close(ind.atr(w), ref_atr(h, lo, c, w), rtol=1e-9)


def test_long_series_has_no_drift() -> None:
    # 20,000 bars with a small window: thousands of add/subtract updates between rebuilds would drift without them.
    rng = np.random.default_rng(3)
    close = 90_000.0 + np.cumsum(rng.normal(0.0, 5.0, 20_000))
    ind = Indicators(make_candles(close))
    for w in (3, 1000):
        t = np.arange(w - 1, close.size, 997)  # sample bars: the loop reference is O(n w)
        assert_close(ind.sma(w)[t], np.array([ref_mean(close[i - w + 1 : i + 1]) for i in t]), rtol=1e-13)
        assert_close(ind.stdev(w)[t], np.array([ref_std(close[i - w + 1 : i + 1]) for i in t]), rtol=1e-7)


def test_windows_longer_than_the_series_are_all_nan() -> None:
    ind = Indicators(make_candles(TINY))
    for method in ("sma", "ema", "stdev", "zscore", "highest", "lowest", "roc", "rsi", "atr"):
        out = getattr(ind, method)(50)
        assert out.shape == (len(TINY),) and np.all(np.isnan(out)), method


# --- causality, memoization, validation ---------------------------------------------------------------------------


def test_values_on_a_prefix_are_bit_identical() -> None:
    candles = random_candles()
    full = Indicators(candles)
    for stop in (1, 2, 49, 50, 51, 333, 1000):
        part = Indicators(candles.slice(0, stop))
        for method in ("sma", "ema", "stdev", "zscore", "highest", "lowest", "roc", "rsi", "atr"):
            for w in (2, 7, 50):
                a, b = getattr(full, method)(w)[:stop], getattr(part, method)(w)
                assert np.array_equal(a, b, equal_nan=True), (method, w, stop)


def test_memoized_read_only_and_order_independent() -> None:
    candles = random_candles()
    ind = Indicators(candles)
    assert ind.sma(20) is ind.sma(20) and ind.atr(14) is ind.atr(np.int64(14))
    with pytest.raises(ValueError):
        ind.sma(20)[0] = 1.0
    other = Indicators(candles)
    other.stdev(20)  # computes the mean on the way
    assert np.array_equal(other.sma(20), ind.sma(20), equal_nan=True)
    assert ind.n == len(candles) and ind.close.dtype == np.float64


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_window_is_rejected(bad: object) -> None:
    with pytest.raises(ValidationError, match="indicator window must be a positive integer"):
        Indicators(make_candles(TINY)).sma(bad)  # type: ignore[arg-type]
