"""Cutting a long equity curve to a few hundred points for display, keeping its shape.

The first and last points are kept; the interior is cut into equal buckets (:func:`kernel.curve_buckets`) and each
bucket keeps the bar of its first minimum and of its first maximum, so peaks and troughs survive. The stored
curves of results, the dashboard's paper charts and the paper report all cut curves this one way; the kernel keeps
exactly these points as it runs when asked to (``run_backtest(..., curve_points=...)``).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from backfarm.engine.kernel import CURVE_HIGH, CURVE_HIGH_BAR, CURVE_LOW, CURVE_LOW_BAR, curve_buckets
from backfarm.errors import ValidationError

MAX_POINTS = 500
"""Points kept of a stored equity curve (first, last, and a min and a max per bucket)."""
_NO_BARS = np.empty(0, dtype=np.int64)


def downsample_minmax(values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Sorted, unique int64 indices of at most ``max_points`` points that keep the shape of ``values``.

    The first and last points are always kept. The interior is cut into equal buckets (one ``reshape``) plus a
    shorter tail bucket, and each bucket contributes the index of its minimum and of its maximum.
    """
    if max_points < 6:
        raise ValidationError(f"max_points must be at least 6, got {max_points}")
    values = np.ascontiguousarray(values, dtype=np.float64)
    return picks(values, *bucket_extremes(values, max_points), max_points)


def bucket_extremes(values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """``argmin`` and ``argmax`` within each full bucket (numpy's SIMD scans: the bulk of the work)."""
    n = len(values)
    if n <= max_points:
        return _NO_BARS, _NO_BARS
    size, full = curve_buckets(n, max_points)
    body = values[1 : 1 + full * size].reshape(full, size)
    return body.argmin(axis=1), body.argmax(axis=1)


@njit(cache=True)
def _extremes(values: np.ndarray, start: int, stop: int) -> tuple[int, int]:
    """``argmin`` and ``argmax`` of ``values[start:stop]`` as absolute indices, with numpy's rules: the first
    occurrence wins, and a NaN is both (the first NaN)."""
    lo = hi = start
    low = high = values[start]
    if np.isnan(low):
        return start, start
    for i in range(start + 1, stop):
        v = values[i]
        if np.isnan(v):
            return i, i
        if v < low:
            low, lo = v, i
        if v > high:
            high, hi = v, i
    return lo, hi


@njit(cache=True)
def picks(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, max_points: int) -> np.ndarray:
    """The indices :func:`downsample_minmax` keeps, given each full bucket's ``argmin``/``argmax`` (relative)."""
    n = len(values)
    if n <= max_points:
        return np.arange(n).astype(np.int64)
    size, full = curve_buckets(n, max_points)
    kept = np.empty(2 * full + 4, dtype=np.int64)
    kept[0] = 0
    k = 1
    for b in range(full + 1):
        base = 1 + b * size
        if b < full:
            low, high = base + lo[b], base + hi[b]
        elif base < n - 1:  # the tail bucket
            low, high = _extremes(values, base, n - 1)
        else:
            break
        # Picks arrive sorted; a flat bucket gives argmin == argmax: keep it once.
        for i in (min(low, high), max(low, high)):
            if i != kept[k - 1]:
                kept[k] = i
                k += 1
    kept[k] = n - 1
    return kept[: k + 1]


def new_curve(n: int, max_points: int) -> tuple[np.ndarray, int]:
    """An empty ``curve`` table for ``simulate`` and its bucket size (full buckets plus the tail)."""
    empty, size = _empty_curve(n, max_points)
    return empty.copy(), size


@functools.lru_cache(maxsize=64)
def _empty_curve(n: int, max_points: int) -> tuple[np.ndarray, int]:
    """The table :func:`new_curve` copies (a sweep asks for the same few shapes thousands of times)."""
    size, full = curve_buckets(n, max_points)
    curve = np.empty((full + 1, 4), dtype=np.float64)
    curve[:, CURVE_LOW] = np.inf
    curve[:, CURVE_HIGH] = -np.inf
    curve[:, CURVE_LOW_BAR] = -1.0
    curve[:, CURVE_HIGH_BAR] = -1.0
    curve.flags.writeable = False
    return curve, size


@njit(cache=True)
def curve_points(curve: np.ndarray, n: int, first: float, last: float) -> tuple[np.ndarray, np.ndarray]:
    """The kept points of a curve (bars ascending, their equity): bar 0 (``first``), each bucket's minimum and
    maximum in bar order (once when they are the same bar), bar n-1 (``last``)."""
    nb = curve.shape[0]
    bars = np.empty(2 * nb + 2, dtype=np.int64)
    values = np.empty(2 * nb + 2, dtype=np.float64)
    bars[0], values[0] = 0, first
    k = 1
    for b in range(nb):
        if curve[b, CURVE_LOW_BAR] < 0:  # an empty tail bucket
            continue
        low, high = int(curve[b, CURVE_LOW_BAR]), int(curve[b, CURVE_HIGH_BAR])
        if low <= high:
            pairs = ((low, curve[b, CURVE_LOW]), (high, curve[b, CURVE_HIGH]))
        else:
            pairs = ((high, curve[b, CURVE_HIGH]), (low, curve[b, CURVE_LOW]))
        for bar, value in pairs:
            if bar != bars[k - 1]:
                bars[k], values[k] = bar, value
                k += 1
    bars[k], values[k] = n - 1, last
    return bars[: k + 1], values[: k + 1]
