"""Candles for strategy and indicator tests, built from a close series (bars one minute apart)."""

from __future__ import annotations

import numpy as np

from backfarm.core.candles import Candles


def make_candles(close, high=None, low=None) -> Candles:  # type: ignore[no-untyped-def]
    """Open = the previous close; high/low = close ± 0.5 unless given."""
    close = np.asarray(close, dtype=np.float64)
    n = close.size
    return Candles(
        source="synthetic",
        symbol="BTC-USD",
        granularity="1m",
        ts=np.arange(n, dtype=np.int64) * 60_000_000_000,
        open=np.r_[close[:1], close[:-1]],
        high=close + 0.5 if high is None else np.asarray(high, dtype=np.float64),
        low=close - 0.5 if low is None else np.asarray(low, dtype=np.float64),
        close=close,
        volume=np.ones(n),
    )
