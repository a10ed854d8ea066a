"""Buy the dip: a function of (indicators, params) under @strategy, its parameters declared beside it."""

from _signals import hold

from backfarm import Param, Rule, strategy


@strategy(
    "rsi_dip",
    params=[
        Param("period", int, 14, 2, 500, (7, 14, 28), "bars of the RSI (Wilder)"),
        Param("entry", float, 30.0, 1.0, 99.0, (20.0, 30.0), "buy when the RSI falls below this", step=1.0),
        Param("exit", float, 55.0, 1.0, 99.0, (50.0, 60.0), "sell when the RSI rises above this", step=1.0),
    ],
    rules=[Rule("entry < exit", lambda p: p["entry"] < p["exit"])],
    warmup=lambda p: int(p["period"]) + 1,
)
def rsi_dip(ind, p):
    """RSI dip: buy when the RSI of the last `period` bars falls below `entry`; hold until it rises above `exit`.
    Flat while the RSI warms up."""
    rsi = ind.rsi(p["period"])
    return hold(rsi < p["entry"], rsi > p["exit"])  # NaN compares false: no signal while warming up
