"""Causal technical indicators over one candle window, memoized so every parameter set of a batch shares them.

Every indicator at bar t uses bars ≤ t only and is NaN until it has enough history. The rolling kernels are numba
loops, O(n) in the number of bars whatever the window: running sums for means and deviations, block-wise prefix and
suffix extremes for rolling max/min, Wilder recursions for RSI and ATR. Each output array is allocated once and kept
(first-touching fresh memory is a large share of the cost), so kernels avoid temporaries of length n.

Exactness matters more than usual here: ``backfarm strategies check`` compares exposures computed on a full series
and on truncations of it bit for bit, so every kernel computes the value at bar t from bars 0..t in an order that does
not depend on how many bars follow. Running sums are rebuilt from scratch at window-aligned bar indices, which bounds
rounding drift to one window's worth of updates and keeps results deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from backfarm.core.candles import Candles
from backfarm.errors import ValidationError

__all__ = ["Indicators"]

_NOISE = 1e-10
"""A rolling deviation below this fraction of the mean's magnitude is rounding noise of the running sums."""


@njit(cache=True)
def _rolling_mean(x: np.ndarray, w: int, with_std: bool) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Rolling mean of ``x`` over ``w`` bars and, when ``with_std``, the population standard deviation (ddof=0).

    Sums run over ``x - c`` for a shift ``c`` (the window mean at the last rebuild) so they stay small and the
    variance does not cancel catastrophically at price levels of 1e5. Windows whose values are all equal get their
    exact value and a deviation of exactly 0: gap-filled flat stretches must not produce noise signals. The mean's
    arithmetic is the same with or without the deviation, so ``sma(w)`` never depends on which was asked first.
    """
    n = x.shape[0]
    mean = np.full(n, np.nan)
    std = np.full(n if with_std else 0, np.nan)
    c = 0.0
    s1 = 0.0
    s2 = 0.0
    run = 0
    phase = 0  # (t - w + 1) % w, kept as a counter: an integer division per bar would dominate the loop
    for t in range(n):
        run = run + 1 if t > 0 and x[t] == x[t - 1] else 1
        if t < w - 1:
            continue
        s = t - w + 1
        rebuild = phase == 0
        phase = phase + 1 if phase + 1 < w else 0
        if rebuild:
            # Rebuild at window-aligned starts: O(w) every w bars, so O(n) overall, and drift never accumulates.
            total = 0.0
            for i in range(s, t + 1):
                total += x[i]
            c = total / w
            s1 = 0.0
            s2 = 0.0
            for i in range(s, t + 1):
                d = x[i] - c
                s1 += d
                s2 += d * d
        else:
            d_in = x[t] - c
            d_out = x[s - 1] - c
            s1 += d_in - d_out
            if with_std:
                s2 += d_in * d_in - d_out * d_out
        if run >= w:
            mean[t] = x[t]
            if with_std:
                std[t] = 0.0
            continue
        m = s1 / w
        mean[t] = c + m
        if with_std:
            var = s2 / w - m * m
            sd = np.sqrt(var) if var > 0.0 else 0.0
            std[t] = 0.0 if sd <= _NOISE * abs(mean[t]) else sd
    return mean, std


@njit(cache=True)
def _zscore(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """(x - mean) / std where std > 0, NaN elsewhere (warm-up and flat windows)."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    for t in range(n):
        if std[t] > 0.0:
            out[t] = (x[t] - mean[t]) / std[t]
    return out


@njit(cache=True)
def _ema(x: np.ndarray, w: int) -> np.ndarray:  # pragma: no cover - compiled
    """Exponential moving average, alpha = 2/(w+1), seeded at bar w-1 with the mean of the first w bars."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    if n < w:
        return out
    total = 0.0
    for i in range(w):
        total += x[i]
    prev = total / w
    out[w - 1] = prev
    alpha = 2.0 / (w + 1.0)
    for t in range(w, n):
        prev = alpha * x[t] + (1.0 - alpha) * prev
        out[t] = prev
    return out


@njit(cache=True, inline="always")
def _better(a: float, b: float, want_max: bool) -> float:  # pragma: no cover - compiled
    """``b`` if it beats ``a`` (strictly greater, or strictly less), else ``a``: a NaN never wins, as in the
    comparisons it replaces. numba's ``max``/``min`` compile to a select, not to a branch that a random walk
    mispredicts about every other bar."""
    return max(a, b) if want_max else min(a, b)


@njit(cache=True)
def _rolling_extreme(x: np.ndarray, w: int, want_max: bool) -> np.ndarray:  # pragma: no cover - compiled
    """Rolling max (or min) of ``x`` over bars t-w+1..t, by blocks of ``w`` bars (van Herk / Gil-Werman): O(n).

    The window ending at bar t of block b is the suffix of block b-1 from t-w+1 plus the prefix of block b up to
    t, so one running extreme per block and the previous block's suffix extremes (a buffer of w) give every value
    with about three branch-free comparisons per bar and no data-dependent inner loop.
    """
    n = x.shape[0]
    out = np.full(n, np.nan)
    suffix = np.empty(min(w, n))
    for start in range(0, n, w):
        stop = min(start + w, n)
        m = x[start]
        if start == 0:  # the first block: only its last bar has a whole window
            for t in range(start, stop):
                m = _better(m, x[t], want_max)
            if stop == start + w:
                out[stop - 1] = m
            continue
        m = x[start - 1]  # suffix extremes of the previous block, start - w .. start - 1
        suffix[w - 1] = m
        for j in range(w - 2, -1, -1):
            m = _better(m, x[start - w + j], want_max)
            suffix[j] = m
        m = x[start]
        for t in range(start, stop):
            m = _better(m, x[t], want_max)
            # the window is the previous block's suffix from t-w+1 and this block up to t (exactly this block at
            # its last bar)
            out[t] = _better(m, suffix[t - start + 1], want_max) if t < start + w - 1 else m
    return out


@njit(cache=True)
def _rsi(close: np.ndarray, w: int) -> np.ndarray:  # pragma: no cover - compiled
    """Wilder's RSI: averages of gains and losses seeded with the mean of the first w changes, then smoothed."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    if n <= w:
        return out
    gain = 0.0
    loss = 0.0
    for t in range(1, n):
        d = close[t] - close[t - 1]
        g = d if d > 0.0 else 0.0
        lo = -d if d < 0.0 else 0.0
        if t <= w:
            gain += g
            loss += lo
            if t < w:
                continue
            gain /= w
            loss /= w
        else:
            gain = (gain * (w - 1) + g) / w
            loss = (loss * (w - 1) + lo) / w
        if loss == 0.0:
            out[t] = 50.0 if gain == 0.0 else 100.0  # flat window: neutral, not "overbought"
        else:
            out[t] = 100.0 - 100.0 / (1.0 + gain / loss)
    return out


@njit(cache=True)
def _true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """max(high - low, |high - previous close|, |low - previous close|); NaN at bar 0 (no previous close)."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    for t in range(1, n):
        pc = close[t - 1]
        out[t] = max(high[t] - low[t], abs(high[t] - pc), abs(low[t] - pc))
    return out


@njit(cache=True)
def _wilder(tr: np.ndarray, w: int) -> np.ndarray:  # pragma: no cover - compiled
    """Wilder smoothing of ``tr`` (defined from bar 1): seeded at bar w with the mean of bars 1..w."""
    n = tr.shape[0]
    out = np.full(n, np.nan)
    if n <= w:
        return out
    total = 0.0
    for t in range(1, w + 1):
        total += tr[t]
    prev = total / w
    out[w] = prev
    for t in range(w + 1, n):
        prev = (prev * (w - 1) + tr[t]) / w
        out[t] = prev
    return out


def _column(arr: np.ndarray) -> np.ndarray:
    """A contiguous float64 view (or copy) of a candle column."""
    return np.ascontiguousarray(arr, dtype=np.float64)


class Indicators:
    """Indicators of one candle window, each computed once per (name, window) and shared read-only.

    ``open, high, low, close, volume`` are the float64 columns and ``n`` the number of bars. Every method returns a
    read-only float64 array of length ``n``, NaN until enough history, and uses bars ≤ t only for bar t.
    """

    def __init__(self, candles: Candles) -> None:
        self.candles = candles
        self.open = _column(candles.open)
        self.high = _column(candles.high)
        self.low = _column(candles.low)
        self.close = _column(candles.close)
        self.volume = _column(candles.volume)
        self.n = int(self.close.shape[0])
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    @property
    def nbytes(self) -> int:
        """Bytes held by the indicators computed so far (what a memo of them must budget for)."""
        return sum(arr.nbytes for arr in list(self._cache.values()))

    def _get(self, name: str, w: int, compute: Callable[[int], np.ndarray]) -> np.ndarray:
        w = _window(w)
        out = self._cache.get((name, w))
        if out is None:
            out = self._store(name, w, compute(w))
        return out

    def _store(self, name: str, w: int, arr: np.ndarray) -> np.ndarray:
        arr.flags.writeable = False  # shared by every parameter set of the batch: nobody may modify it
        self._cache[(name, w)] = arr
        return arr

    def sma(self, w: int) -> np.ndarray:
        """Simple moving average of close over bars t-w+1..t."""
        return self._get("sma", w, lambda v: _rolling_mean(self.close, v, False)[0])

    def stdev(self, w: int) -> np.ndarray:
        """Rolling population standard deviation (ddof=0) of close over bars t-w+1..t; exactly 0 on flat windows."""
        return self._get("stdev", w, self._stdev)

    def _stdev(self, w: int) -> np.ndarray:
        mean, std = _rolling_mean(self.close, w, True)
        if ("sma", w) not in self._cache:
            self._store("sma", w, mean)  # same arithmetic as sma(w): keep it rather than compute it again
        return std

    def ema(self, w: int) -> np.ndarray:
        """Exponential moving average of close, alpha = 2/(w+1), seeded at bar w-1 with the SMA of the first w bars."""
        return self._get("ema", w, lambda v: _ema(self.close, v))

    def zscore(self, w: int) -> np.ndarray:
        """(close - sma(w)) / stdev(w); NaN where the window is flat (deviation 0)."""
        return self._get("zscore", w, self._zscore)

    def _zscore(self, w: int) -> np.ndarray:
        std = self.stdev(w)
        return _zscore(self.close, self.sma(w), std)

    def highest(self, w: int) -> np.ndarray:
        """Rolling max of high over bars t-w+1..t (bar t included)."""
        return self._get("highest", w, lambda v: _rolling_extreme(self.high, v, True))

    def lowest(self, w: int) -> np.ndarray:
        """Rolling min of low over bars t-w+1..t (bar t included)."""
        return self._get("lowest", w, lambda v: _rolling_extreme(self.low, v, False))

    def roc(self, w: int) -> np.ndarray:
        """Rate of change: close[t] / close[t-w] - 1."""
        return self._get("roc", w, self._roc)

    def _roc(self, w: int) -> np.ndarray:
        out = np.full(self.n, np.nan)
        if self.n > w:
            np.divide(self.close[w:], self.close[:-w], out=out[w:])
            out[w:] -= 1.0
        return out

    def rsi(self, w: int) -> np.ndarray:
        """Wilder's relative strength index of close in [0, 100]; first defined at bar w (50 on a flat window)."""
        return self._get("rsi", w, lambda v: _rsi(self.close, v))

    def true_range(self) -> np.ndarray:
        """Each bar's true range: max(high - low, |high - prev close|, |low - prev close|); NaN at bar 0."""
        return self._get("true_range", 1, lambda _: _true_range(self.high, self.low, self.close))

    def atr(self, w: int) -> np.ndarray:
        """Wilder's average true range: the mean of bars 1..w's true range at bar w, then Wilder-smoothed."""
        return self._get("atr", w, lambda v: _wilder(self.true_range(), v))


def _window(w: object) -> int:
    """An indicator window as a positive int; anything else is a strategy bug worth a clear message."""
    if isinstance(w, bool) or not isinstance(w, int | np.integer) or int(w) < 1:
        raise ValidationError(f"indicator window must be a positive integer, got {w!r}")
    return int(w)
