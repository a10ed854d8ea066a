"""The backtest engine: fill and cost model, compiled kernel, metrics, result artifacts. Pure numpy/numba, no I/O."""
