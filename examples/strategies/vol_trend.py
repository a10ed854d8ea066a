"""A trend follower that sizes its position by volatility: fractional exposure, a Strategy subclass."""

import numpy as np

from backfarm import Param, Strategy


class VolTrend(Strategy):
    """Volatility-scaled trend: while the close is above its `trend`-bar EMA, hold the fraction
    `target` / (ATR(`atr`) / close) of equity (capped at 1), so a calmer market gets a larger position; flat below
    the EMA and while either indicator warms up."""

    name = "vol_trend"
    version = "1"
    params = (
        Param("trend", int, 100, 2, 5000, (50, 100, 200), "bars of the trend EMA"),
        Param("atr", int, 30, 2, 1000, (14, 30), "bars of the average true range"),
        Param(
            "target",
            float,
            0.002,
            0.0001,
            0.05,
            (0.001, 0.002, 0.004),
            "ATR share of price held at full size",
            log=True,
        ),
    )

    def exposure(self, ind, p):
        ema, atr = ind.ema(p["trend"]), ind.atr(p["atr"])
        size = np.minimum(1.0, p["target"] / (atr / ind.close))
        out = np.where(ind.close > ema, size, 0.0)
        return np.nan_to_num(out, nan=0.0)

    def warmup(self, p):
        return max(int(p["trend"]), int(p["atr"])) + 1
