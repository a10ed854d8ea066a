"""What every bar must satisfy before it is cached, whoever sent it (an imported file, Coinbase, the simulator):
positive finite prices, a high above and a low below the open and close, a volume that is a non-negative number."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from backfarm.core.candles import COLUMNS, PRICE_COLUMNS


def first_bad_bar(values: Mapping[str, np.ndarray]) -> tuple[int, str] | None:
    """The first bar (index) that breaks a rule, with what is wrong with it; ``None`` if every bar is sound. NaN
    and infinite prices count as not positive and finite."""
    o, h, lo, c, v = (np.asarray(values[k], dtype=np.float64) for k in COLUMNS[1:])
    prices = np.stack([o, h, lo, c])
    checks: list[tuple[np.ndarray, Callable[[int], str]]] = [
        (
            ~np.all((prices > 0) & np.isfinite(prices), axis=0),
            lambda i: f"prices must be positive and finite, got {_ohlc(values, i)}",
        ),
        (h < lo, lambda i: f"high {h[i]} < low {lo[i]}"),
        (h < o, lambda i: f"high {h[i]} < open {o[i]}"),
        (h < c, lambda i: f"high {h[i]} < close {c[i]}"),
        (lo > o, lambda i: f"low {lo[i]} > open {o[i]}"),
        (lo > c, lambda i: f"low {lo[i]} > close {c[i]}"),
        (~(v >= 0) | ~np.isfinite(v), lambda i: f"volume must be a non-negative number, got {v[i]}"),
    ]
    bad = np.logical_or.reduce([mask for mask, _ in checks])
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    return i, next(describe(i) for mask, describe in checks if mask[i])


def _ohlc(values: Mapping[str, np.ndarray], i: int) -> str:
    return ", ".join(f"{k} {values[k][i]}" for k in PRICE_COLUMNS)
