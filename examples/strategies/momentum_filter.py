"""Two indicators, one filter: momentum entries taken only in an uptrend."""

from _signals import hold

from backfarm import Param, Rule, strategy


@strategy(
    "momentum_filter",
    params=[
        Param("lookback", int, 60, 2, 5000, (30, 60, 120), "bars of the rate of change"),
        Param("regime", int, 480, 2, 5000, (240, 480, 960), "bars of the trend filter's SMA"),
    ],
    rules=[Rule("lookback < regime", lambda p: p["lookback"] < p["regime"])],
    warmup=lambda p: int(p["regime"]) + 1,
)
def momentum_filter(ind, p):
    """Momentum with a trend filter: buy when the `lookback`-bar rate of change turns positive while the close is
    above its `regime`-bar SMA; sell when the rate of change turns negative or the close falls below the SMA."""
    roc, sma = ind.roc(p["lookback"]), ind.sma(p["regime"])
    uptrend = ind.close > sma
    return hold((roc > 0) & uptrend, (roc < 0) | (ind.close < sma))
