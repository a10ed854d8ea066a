"""The SMA-crossover part of the standard sweep in backfarm, vectorbt and backtesting.py, on the same candles and
costs, after checking that their trade counts match backfarm's."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from backfarm.config import Settings
from backfarm.core.candles import Candles
from backfarm.core.costs import Costs
from backfarm.execution.runner import run_jobs
from backfarm.strategies.indicators import Indicators
from backfarm.strategies.registry import get_strategy
from backfarm.sweeps.expand import Expansion
from backfarm.sweeps.run import expand_spec
from benchmarks.common import BACKTESTING_PY_RUNS, SMA, Plan, stats, timed_sweep, window_candles


def bench_references(plan: Plan, settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    """The SMA-crossover part of the sweep in backfarm, vectorbt and backtesting.py (whichever are installed)."""

    strategy = get_strategy(SMA)
    grid = list(strategy.default_grid())
    expansion = expand_spec(plan.spec(strategies=SMA), settings)
    data = [window_candles(expansion, settings, symbol) for symbol in plan.symbols]
    out: dict[str, Any] = {"strategy": SMA, "params": len(grid), "symbols": len(data), "jobs": len(grid) * len(data)}
    progress("references: backfarm on the SMA part")
    out["backfarm"] = _backfarm_sma(plan, settings, expansion, grid, data)
    progress("references: vectorbt")
    out["vectorbt"] = _guard(lambda: _vectorbt_sma(plan, grid, data, out["backfarm"]["trades"]))
    progress("references: backtesting.py")
    out["backtesting_py"] = _guard(lambda: _backtesting_sma(plan, grid, data[0], out["backfarm"]["trades"][0]))
    return out


@contextlib.contextmanager
def _patched(owner: object, name: str, value: object) -> Iterator[None]:
    """Temporarily replace ``owner.name``."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _guard(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a reference; a missing library is reported as such, not raised."""
    try:
        return run()
    except ImportError as exc:
        return {"available": False, "reason": f"not installed ({exc.name}); pip install 'backfarm[bench]'"}


def _backfarm_sma(
    plan: Plan, settings: Settings, expansion: Expansion, grid: list[dict[str, Any]], data: list[Candles]
) -> dict[str, Any]:
    """backfarm's SMA part (``expansion``): one process (per core) and all cores (embedded executor), plus its trade
    counts."""

    jobs_of = {symbol: [] for symbol in plan.symbols}  # type: dict[str, list[Any]]
    for job in expansion.jobs:
        jobs_of[job.symbol].append(job)
    trades: list[list[int]] = []
    runs = []
    for r in range(plan.repeats + 1):
        started = time.perf_counter()
        counts = []
        for candles in data:
            indicators = Indicators(candles)  # fresh each round: indicator work is part of a backtest's cost
            table = run_jobs(jobs_of[candles.symbol], candles, indicators).results  # one batch, as a sweep runs it
            counts += [int(n or 0) for n in table.column("m_trades").to_pylist()]
        if r:  # the first round warms up
            runs.append(time.perf_counter() - started)
        trades = [counts[i : i + len(grid)] for i in range(0, len(counts), len(grid))]
    jobs = len(grid) * len(data)
    executor = []
    for _ in range(plan.repeats):
        _, seconds, _ = timed_sweep(plan.spec(strategies=SMA), settings, None)
        executor.append(seconds)
    return {
        "one_process_backtests_per_s": stats([jobs / s for s in runs]),
        "embedded_backtests_per_s": stats([jobs / s for s in executor]),
        "trades": trades,
    }


def _sma_targets(close: np.ndarray, fast: int, slow: int) -> np.ndarray:
    """The crossover rule as 0/1 targets, from plain rolling means (the reference libraries' own arithmetic)."""

    series = pd.Series(close)
    f = series.rolling(fast).mean().to_numpy()
    s = series.rolling(slow).mean().to_numpy()
    with np.errstate(invalid="ignore"):
        return (f > s).astype(np.float64)


def _orders(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit flags at the bar that *trades* (t+1) for targets decided at bar t's close."""
    prev = np.concatenate(([0.0], targets[:-1]))
    entries = np.zeros(len(targets), dtype=bool)
    exits = np.zeros(len(targets), dtype=bool)
    entries[1:] = (targets[:-1] > 0) & (prev[:-1] == 0)
    exits[1:] = (targets[:-1] == 0) & (prev[:-1] > 0)
    return entries, exits


def _vectorbt_sma(plan: Plan, grid: list[dict[str, Any]], data: list[Candles], ours: list[list[int]]) -> dict[str, Any]:
    """vectorbt on the same candles and costs: per symbol one portfolio over every parameter set (its fastest use:
    columns broadcast in one call), then its per-column statistics."""
    import vectorbt as vbt  # ImportError means "not installed"

    costs = Costs()
    warnings.filterwarnings("ignore", module="vectorbt")

    def one_symbol(candles: Candles) -> list[int]:
        index = pd.date_range("2000-01-01", periods=len(candles), freq="1min")
        signals = [_orders(_sma_targets(candles.close, int(p["fast"]), int(p["slow"]))) for p in grid]
        entries = pd.DataFrame(np.column_stack([e for e, _ in signals]), index=index)
        exits = pd.DataFrame(np.column_stack([x for _, x in signals]), index=index)
        pf = vbt.Portfolio.from_signals(
            close=pd.Series(candles.close, index=index),
            entries=entries,
            exits=exits,
            price=pd.Series(candles.open, index=index),
            fees=costs.fee,
            slippage=costs.buy_markup,
            init_cash=1e4,
            freq="1min",
        )
        pf.stats(agg_func=None, silence_warnings=True)
        return [int(n) for n in pf.trades.count().to_numpy()]

    one_symbol(data[0])  # warm: vectorbt compiles its kernels on first use
    runs, counts = [], []
    for _ in range(plan.repeats):
        started = time.perf_counter()
        counts = [one_symbol(candles) for candles in data]
        runs.append(time.perf_counter() - started)
    jobs = len(grid) * len(data)
    return {
        "available": True,
        "version": vbt.__version__,
        "backtests_per_s": stats([jobs / s for s in runs]),
        "trades_match": counts == ours,
        "trade_mismatches": sum(a != b for x, y in zip(counts, ours, strict=True) for a, b in zip(x, y, strict=True)),
    }


def _backtesting_sma(plan: Plan, grid: list[dict[str, Any]], candles: Candles, ours: list[int]) -> dict[str, Any]:
    """backtesting.py on the same candles and costs, a few parameter sets per repeat (it takes seconds each)."""
    import backtesting
    import backtesting.backtesting
    from backtesting import Backtest, Strategy

    costs = Costs()
    index = pd.date_range("2000-01-01", periods=len(candles), freq="1min")
    frame = pd.DataFrame(
        {"Open": candles.open, "High": candles.high, "Low": candles.low, "Close": candles.close,
         "Volume": candles.volume},
        index=index,
    )  # fmt: skip

    class Targets(Strategy):
        targets: np.ndarray = np.zeros(0)

        def init(self) -> None:
            self.signal = self.I(lambda: self.targets, name="target")

        def next(self) -> None:
            if self.signal[-1] > 0 and not self.position:
                self.buy()
            elif self.signal[-1] == 0 and self.position:
                self.position.close()

    picks = grid[:BACKTESTING_PY_RUNS]
    runs: list[float] = []
    counts: list[int] = []
    warnings.filterwarnings("ignore", module="backtesting")
    quiet = contextlib.ExitStack()
    if hasattr(backtesting.backtesting, "_tqdm"):  # it draws a progress bar per run when tqdm is installed
        quiet.enter_context(_patched(backtesting.backtesting, "_tqdm", lambda seq, *args, **kwargs: seq))
    with quiet:
        for _ in range(plan.repeats):
            started = time.perf_counter()
            counts = []
            for params in picks:
                targets = _sma_targets(candles.close, int(params["fast"]), int(params["slow"]))
                bt = Backtest(
                    frame, Targets, cash=1e12, commission=costs.fee, spread=2 * costs.buy_markup, finalize_trades=True
                )
                counts.append(int(bt.run(targets=targets)["# Trades"]))
            runs.append((time.perf_counter() - started) / len(picks))
    expected = ours[: len(picks)]
    return {
        "available": True,
        "version": backtesting.__version__,
        "backtests_per_s": stats([1.0 / s for s in runs]),
        "params_run": len(picks),
        "trades_match": counts == expected,
        "trade_mismatches": sum(a != b for a, b in zip(counts, expected, strict=True)),
    }
