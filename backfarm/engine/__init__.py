"""The backtest engine: fill and cost model, compiled kernel, metrics. Pure numpy/numba, no I/O."""

ENGINE_VERSION = "1"
"""Bumped whenever the fill model or a metric definition changes; part of every job id."""

METRIC_NAMES: tuple[str, ...] = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "trades",
    "wins",
    "win_rate",
    "profit_factor",
    "avg_trade",
    "exposure",
    "turnover",
    "fees_paid",
)
"""Every metric a backtest reports, in display order; definitions in :mod:`backfarm.engine.metrics`. Kept here
(import-light, no numba) so the result model can share the one list."""
