"""The backtest engine: fill and cost model, compiled kernel, metrics. Pure numpy/numba, no I/O."""

ENGINE_VERSION = "1"
"""Bumped whenever the fill model or a metric definition changes; part of every job id."""
