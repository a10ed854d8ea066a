"""Cutting a long equity curve to a few hundred points for display, keeping its shape.

The first and last points are kept; the interior is cut into equal buckets (:func:`kernel.curve_buckets`) and each
bucket keeps the bar of its first minimum and of its first maximum, so peaks and troughs survive. The stored
curves of results, the dashboard's paper charts and the paper report all cut curves this one way; the kernel keeps
exactly these points as it runs when asked to (``run_backtest(..., curve_points=...)``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from backfarm.engine.kernel import curve_buckets
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
