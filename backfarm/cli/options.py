"""Options several commands take, each declared once: what to run, on which candles, over which period, at what cost.

A command declares a parameter with one of these types under the name the sweep spec (or the cost model) uses, so its
value reaches :meth:`backfarm.sweeps.spec.SweepSpec.from_flags` or :func:`backfarm.core.costs.costs_from` by name,
never copied field by field. ``None`` means "not given": the spec file or the default decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Strategies = Annotated[str | None, typer.Option(help="Comma-separated strategy names.")]
Symbols = Annotated[str | None, typer.Option(help="Comma-separated products, e.g. BTC-USD,ETH-USD.")]
ParamSets = Annotated[
    list[str] | None,
    typer.Option(
        help="Parameter sets: 'ma_crossover:fast=10,slow=30' ('|' lists alternatives). Repeatable. Without "
        "--strategies, only the strategies named here run."
    ),
]
Granularity = Annotated[str | None, typer.Option(help="Bar size: 1m 5m 15m 30m 1h 2h 6h 1d. (default 1m)")]
Source = Annotated[str | None, typer.Option(help="Candles: coinbase | synthetic | file. (default coinbase)")]

Days = Annotated[int | None, typer.Option(help="Period: the last N whole days (UTC). (default 30)")]
Start = Annotated[str | None, typer.Option(help="Period start (ISO date/time, UTC).")]
End = Annotated[str | None, typer.Option(help="Period end, exclusive (default: today 00:00 UTC).")]
Window = Annotated[str | None, typer.Option(help="Walk-forward window length, e.g. 7d.")]
Step = Annotated[str | None, typer.Option(help="Walk-forward step (default: the window length).")]
Grid = Annotated[bool, typer.Option("--grid", help="Use every strategy's default parameter grid.")]
Quick = Annotated[
    bool, typer.Option("--quick", help="7 days, momentum/mean_reversion/breakout on BTC-USD and ETH-USD.")
]
StrategyPath = Annotated[
    list[Path] | None,
    typer.Option(
        "--strategy-path",
        envvar="BACKFARM_STRATEGY_PATH",
        help="Your strategies: a .py file or a folder of them. Repeatable; the variable takes a ':'-separated list.",
    ),
]
AllowLookahead = Annotated[
    bool,
    typer.Option(
        "--allow-lookahead",
        help="Run strategy files that fail the lookahead check anyway; their results are labelled '+lookahead'.",
    ),
]
SpecFile = Annotated[Path | None, typer.Option("--spec", help="A sweep spec file (TOML or JSON); flags override it.")]

FeeBps = Annotated[float | None, typer.Option(help="Fee per side in basis points. (default 60)")]
SpreadBps = Annotated[float | None, typer.Option(help="Full bid/ask spread in basis points. (default 2)")]
SlippageBps = Annotated[float | None, typer.Option(help="Slippage per side in basis points. (default 0)")]
StopLossBps = Annotated[float | None, typer.Option(help="Stop-loss below the entry price, in bps.")]
TakeProfitBps = Annotated[float | None, typer.Option(help="Take-profit above the entry price, in bps.")]
Capital = Annotated[float | None, typer.Option(help="Initial capital in quote currency, per account. (default 10000)")]
