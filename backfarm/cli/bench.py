"""``backfarm bench``: the speed test. Backtests per second on a fixed standard sweep, side by side with references.

The standard sweep is the five built-ins over their default grids on 5 symbols × 30 days of 1-minute synthetic
candles (1,285 jobs). It runs on the embedded executor with 1 and all cores, through the farm with 1 and 2 workers
(when Redis is configured, or with ``--farm``), and its SMA-crossover part runs in vectorbt and backtesting.py when
they are installed (``pip install backfarm[bench]``) — on the same candles and costs, after checking that their
trade counts match backfarm's. The seeds' 25-backtest screen is timed too, and ``--days-scaling`` shows how time
grows with 30/90/365 days. Every figure is the median of ``--repeats`` runs with min–max; ``--json`` prints the
same for machines.

Everything runs in a private temporary data directory: no user data is read or written, no network is used, and
the farm part starts its own ``redis-server`` on a free port when one is installed (so a production farm's queues
and leaderboards are never touched). Start-up work (imports, kernel loading, candle generation) is kept out of the
timings; each timed run starts from an empty result store.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from backfarm.cli import state
from backfarm.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from backfarm.candles.schema import Candles
    from backfarm.config import Settings
    from backfarm.sweeps.spec import Expansion
    from backfarm.tasks.sweep import SweepRequest

SEEDS_RATE = 7.6
"""The seeds' headline: 25 backtests of 30 days in 3.3 s."""
STANDARD_SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD", "LINK-USD", "POL-USD")
STANDARD_DAYS = 30
SCALING_DAYS = (30, 90, 365)
SMA = "ma_crossover"
TARGETS = {
    "embedded_backtests_per_s": 6000.0,
    "farm_2_workers_backtests_per_s": 5000.0,
    "vs_vectorbt": 20.0,
    "screen_seconds": 0.5,
    "peak_mb_per_process": 500.0,
    "time_growth_vs_linear": 1.5,
}
"""The issue's targets (medians on a 2-core machine). ``time_growth_vs_linear``: the longest window's time over the
shortest's, divided by their ratio of bars (365 days may take at most 1.5 × 365/30 the time of 30)."""
BACKTESTING_PY_RUNS = 2
"""backtesting.py takes seconds per 30-day backtest: a few parameter sets per repeat are enough for its rate."""
FARM_TIMEOUT_S = 600.0

Stats = dict[str, float]


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""
    app.command("bench")(bench)


def bench(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    repeats: Annotated[int, typer.Option(help="Timed runs per figure (the median is reported).")] = 3,
    days_scaling: Annotated[
        bool, typer.Option("--days-scaling", help="Also time the sweep on 30, 90 and 365 days of bars.")
    ] = False,
    references: Annotated[
        bool, typer.Option("--references/--no-references", help="Compare with vectorbt and backtesting.py.")
    ] = True,
    farm: Annotated[
        bool | None,
        typer.Option("--farm/--no-farm", help="Time the farm with 1 and 2 workers (default: when Redis is set)."),
    ] = None,
    days: Annotated[int, typer.Option(help="Days of 1-minute bars per window.")] = STANDARD_DAYS,
    symbols: Annotated[int, typer.Option(help="Symbols in the sweep (1-5).")] = len(STANDARD_SYMBOLS),
    strategies: Annotated[str | None, typer.Option(help="Comma-separated strategies (default: all five).")] = None,
    scaling_days: Annotated[str, typer.Option(help="Window lengths for --days-scaling.")] = "30,90,365",
) -> None:
    """Benchmark backfarm: backtests/s on the standard sweep (embedded, farm), the 25-backtest screen, peak memory,
    scaling with bars, and ratios to vectorbt and backtesting.py."""
    if repeats < 1:
        raise ValidationError(f"--repeats must be at least 1, got {repeats}")
    if days < 1:
        raise ValidationError(f"--days must be at least 1, got {days}")
    if not 1 <= symbols <= len(STANDARD_SYMBOLS):
        raise ValidationError(f"--symbols must be between 1 and {len(STANDARD_SYMBOLS)}, got {symbols}")
    lengths = _parse_days(scaling_days)
    settings = state.settings()
    run_farm = farm if farm is not None else bool(settings.redis_url)
    plan = Plan(
        repeats=repeats,
        days=days,
        symbols=STANDARD_SYMBOLS[:symbols],
        strategies=strategies,
        scaling=lengths if days_scaling else (),
        references=references,
        farm=run_farm,
        redis_url=settings.redis_url,
    )
    progress = (lambda text: None) if as_json else (lambda text: state.err_console.print(f"[dim]{text}[/]"))
    report = run_bench(plan, progress)
    if as_json:
        typer.echo(json.dumps(report, indent=1, default=_json_default))
    else:
        print_report(report)


def _parse_days(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValidationError(f"--scaling-days must be comma-separated whole days, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ValidationError(f"--scaling-days must be positive whole days, got {text!r}")
    return values


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# --- the plan and the run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to measure (the command's options, validated)."""

    repeats: int = 3
    days: int = STANDARD_DAYS
    symbols: tuple[str, ...] = STANDARD_SYMBOLS
    strategies: str | None = None
    scaling: tuple[int, ...] = ()
    references: bool = True
    farm: bool = False
    redis_url: str | None = None

    def request(self, **changes: Any) -> SweepRequest:
        """The standard sweep as a request (grid over every strategy, synthetic candles), with ``changes``."""
        from backfarm.tasks.sweep import SweepRequest

        values: dict[str, Any] = {
            "strategies": self.strategies,
            "symbols": ",".join(self.symbols),
            "grid": True,
            "days": self.days,
            "source": "synthetic",
        }
        values.update(changes)
        return SweepRequest(**values)


def run_bench(plan: Plan, progress: Callable[[str], None]) -> dict[str, Any]:
    """Run every measurement of ``plan`` in a private data directory and return the report (JSON-ready)."""
    from backfarm.tasks.local import default_workers
    from backfarm.tasks.runner import warm_up

    with tempfile.TemporaryDirectory(prefix="backfarm-bench-") as tmp:
        settings = replace(state.settings(), data_dir=Path(tmp), redis_url=None)
        report: dict[str, Any] = {"machine": _machine(), "config": _config(plan)}
        started = time.perf_counter()
        warm_up()
        report["warm_up_s"] = time.perf_counter() - started
        progress("generating candles")
        standard, report["data_s"] = _prepare(plan, settings)
        report["config"]["jobs"] = len(standard.jobs)
        progress("per-core costs")
        report["per_core"] = bench_per_core(plan, settings)
        progress("the seeds' 25-backtest screen")
        report["screen"] = bench_screen(plan, settings)
        cores = default_workers()
        counts = sorted({1, max(2, cores)} if cores > 1 else {1})
        report["embedded"] = []
        for workers in counts:
            progress(f"standard sweep, embedded, {workers} worker(s)")
            report["embedded"].append(bench_embedded(plan, settings, workers))
        progress(f"standard sweep, embedded, {counts[-1]} worker(s), --no-curves")
        report["embedded_no_curves"] = bench_embedded(plan, settings, counts[-1], curves=False)
        report["memory"] = _memory()
        report["days_scaling"] = bench_scaling(plan, settings, progress) if plan.scaling else None
        report["references"] = bench_references(plan, settings, progress) if plan.references else None
        report["farm"] = bench_farm(plan, settings, progress) if plan.farm else None
    report["ratios"] = ratios(report)
    report["targets"] = targets(report)
    return report


def _machine() -> dict[str, Any]:
    import numba

    from backfarm import __version__
    from backfarm.tasks.local import default_workers

    return {
        "cores": default_workers(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "backfarm": __version__,
    }


def _config(plan: Plan) -> dict[str, Any]:
    return {
        "repeats": plan.repeats,
        "days": plan.days,
        "granularity": "1m",
        "bars": plan.days * 1440,
        "symbols": list(plan.symbols),
        "strategies": plan.strategies or "all",
        "source": "synthetic",
    }


def _stats(values: Sequence[float]) -> Stats:
    """Median, min and max of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def _prepare(plan: Plan, settings: Settings) -> tuple[Expansion, float]:
    """Generate (and cache) every window the plan reads, as a sweep does before it runs: the standard sweep's
    expansion, and the seconds it took (kept out of all timings)."""
    from backfarm.tasks.sweep import build_expansion, prepare_data

    standard = build_expansion(plan.request(), settings)
    scaling = [build_expansion(plan.request(days=days, symbols=plan.symbols[0]), settings) for days in plan.scaling]
    started = time.perf_counter()
    for expansion in [standard, *scaling]:
        prepare_data(expansion, settings)
    return standard, time.perf_counter() - started


def _candles(expansion: Expansion, settings: Settings, symbol: str) -> Candles:
    """``symbol``'s candles over the expansion's period (cached by :func:`_prepare`), as its jobs read them."""
    from backfarm.candles.load import load_candles

    spec = expansion.spec
    start, end = expansion.windows[0][0], expansion.windows[-1][1]
    return load_candles(settings, spec.source, symbol, spec.granularity, start, end)


def _fresh_store(settings: Settings) -> None:
    """Remove the embedded store so the next run computes every job."""
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{settings.store_path}{suffix}")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# --- embedded -----------------------------------------------------------------------------------------------------


def timed_sweep(request: SweepRequest, settings: Settings, workers: int | None) -> tuple[float, float, int]:
    """One sweep from an empty store: (end-to-end seconds, executor seconds, jobs computed)."""
    from backfarm.tasks.sweep import run_sweep

    _fresh_store(settings)
    started = time.perf_counter()
    outcome = run_sweep(request, settings, workers=workers)
    wall = time.perf_counter() - started
    outcome.store.close()
    if outcome.stats.failed or outcome.stats.interrupted:
        raise ConfigError(f"benchmark sweep did not complete: {outcome.stats}")
    return wall, outcome.stats.seconds, outcome.stats.computed


def bench_screen(plan: Plan, settings: Settings) -> dict[str, Any]:
    """The seeds' screen: 5 strategies × 5 symbols, default parameters, 30 days of 1m, after one warm-up run."""
    request = plan.request(grid=False, strategies=None, symbols=",".join(STANDARD_SYMBOLS[: len(plan.symbols)]))
    timed_sweep(request, settings, None)  # warm: this process's first sweep pays for lazy imports
    walls, jobs = [], 0
    for _ in range(plan.repeats):
        wall, _, jobs = timed_sweep(request, settings, None)
        walls.append(wall)
    return {"jobs": jobs, "seconds": _stats(walls), "backtests_per_s": _stats([jobs / w for w in walls])}


def bench_embedded(plan: Plan, settings: Settings, workers: int, curves: bool = True) -> dict[str, Any]:
    """The standard sweep on the embedded executor with ``workers`` processes, from an empty store each run
    (``curves``: as ``backtest --curves/--no-curves``)."""
    request = plan.request(curves=curves)
    walls, executor, jobs = [], [], 0
    for _ in range(plan.repeats):
        wall, seconds, jobs = timed_sweep(request, settings, workers)
        walls.append(wall)
        executor.append(seconds)
    return {
        "workers": workers,
        "jobs": jobs,
        "backtests_per_s": _stats([jobs / s for s in executor]),
        "end_to_end_backtests_per_s": _stats([jobs / w for w in walls]),
        "seconds": _stats(executor),
    }


def bench_per_core(plan: Plan, settings: Settings) -> dict[str, Any]:
    """One process, one symbol: µs per job of each strategy (indicators shared, as in a batch; no store) and the
    memory floor — reading the four price columns once, the least any backtest of the window must do."""
    from backfarm.strategies.indicators import Indicators
    from backfarm.tasks.runner import run_job
    from backfarm.tasks.sweep import build_expansion

    expansion = build_expansion(plan.request(symbols=plan.symbols[0]), settings)
    candles = _candles(expansion, settings, plan.symbols[0])
    indicators = Indicators(candles)
    out: dict[str, Any] = {"bars": len(candles), "strategies": {}}
    total_s, total_jobs = 0.0, 0
    for name in sorted({job.strategy for job in expansion.jobs}):
        jobs = [job for job in expansion.jobs if job.strategy == name]
        for job in jobs:  # warm: the grid's indicators are computed once, as in a batch
            run_job(job, candles, indicators)
        runs = []
        for _ in range(plan.repeats):
            started = time.perf_counter()
            for job in jobs:
                run_job(job, candles, indicators)
            runs.append((time.perf_counter() - started) / len(jobs))
        out["strategies"][name] = {"grid": len(jobs), "us_per_backtest": _stats([r * 1e6 for r in runs])}
        total_s += statistics.median(runs) * len(jobs)
        total_jobs += len(jobs)
    out["us_per_backtest"] = total_s / total_jobs * 1e6
    out["backtests_per_s"] = total_jobs / total_s
    floor_us = _read_floor_us(candles, plan.repeats)
    out["memory_floor"] = {"us_per_backtest": floor_us, "backtests_per_s": 1e6 / floor_us}
    return out


def _read_floor_us(candles: Candles, repeats: int) -> float:
    """µs to read open, high, low and close once (from memory, not cache: other arrays are streamed in between)."""
    columns = [np.array(c, dtype=np.float64) for c in (candles.open, candles.high, candles.low, candles.close)]
    flush = np.ones(8 * 2**20 // 8)  # 8 MiB: evicts the columns from the faster caches between runs
    runs = []
    for _ in range(max(5, repeats * 3)):
        flush.sum()
        started = time.perf_counter()
        for column in columns:
            column.sum()
        runs.append(time.perf_counter() - started)
    return min(runs) * 1e6


# --- memory -------------------------------------------------------------------------------------------------------


def _vm_hwm_mb(pid: int | str = "self") -> float | None:
    """Peak resident memory of a process (Linux ``VmHWM``), MiB; ``None`` where /proc is not available."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _memory() -> dict[str, Any]:
    """Peak resident memory so far of this process and of the largest pool process it ran."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"parent_peak_mb": _vm_hwm_mb(), "child_peak_mb": children or None}


# --- scaling with bars --------------------------------------------------------------------------------------------


def bench_scaling(plan: Plan, settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    """The standard grid on one symbol at each window length, on all cores; time per backtest and its growth."""
    rows: list[dict[str, Any]] = []
    for days in plan.scaling:
        progress(f"scaling: {days} days")
        request = plan.request(days=days, symbols=plan.symbols[0])
        timed_sweep(request, settings, None)  # warm: first use of this window length
        runs: list[float] = []
        jobs = 0
        for _ in range(plan.repeats):
            _, seconds, jobs = timed_sweep(request, settings, None)
            runs.append(seconds)
        rows.append({"days": days, "bars": days * 1440, "jobs": jobs, "seconds": _stats(runs)})
    base_s, base_bars = rows[0]["seconds"]["median"], rows[0]["bars"]
    for row in rows:
        median_s = row["seconds"]["median"]
        row["time_ratio"] = median_s / base_s
        row["bars_ratio"] = row["bars"] / base_bars
        row["us_per_backtest"] = median_s / row["jobs"] * 1e6
    return {"rows": rows, "child_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


# --- reference libraries ------------------------------------------------------------------------------------------


def bench_references(plan: Plan, settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    """The SMA-crossover part of the sweep in backfarm, vectorbt and backtesting.py (whichever are installed)."""
    from backfarm.strategies.registry import get_strategy
    from backfarm.tasks.sweep import build_expansion

    strategy = get_strategy(SMA)
    grid = list(strategy.default_grid())
    expansion = build_expansion(plan.request(strategies=SMA), settings)
    data = [_candles(expansion, settings, symbol) for symbol in plan.symbols]
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
    from backfarm.strategies.indicators import Indicators
    from backfarm.tasks.runner import run_job

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
            for job in jobs_of[candles.symbol]:
                counts.append(int(run_job(job, candles, indicators).metrics["trades"] or 0))
        if r:  # the first round warms up
            runs.append(time.perf_counter() - started)
        trades = [counts[i : i + len(grid)] for i in range(0, len(counts), len(grid))]
    jobs = len(grid) * len(data)
    executor = []
    for _ in range(plan.repeats):
        _, seconds, _ = timed_sweep(plan.request(strategies=SMA), settings, None)
        executor.append(seconds)
    return {
        "one_process_backtests_per_s": _stats([jobs / s for s in runs]),
        "embedded_backtests_per_s": _stats([jobs / s for s in executor]),
        "trades": trades,
    }


def _sma_targets(close: np.ndarray, fast: int, slow: int) -> np.ndarray:
    """The crossover rule as 0/1 targets, from plain rolling means (the reference libraries' own arithmetic)."""
    import pandas as pd

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
    import warnings

    import pandas as pd
    import vectorbt as vbt  # type: ignore[import-untyped]  # ImportError means "not installed"

    from backfarm.engine.costs import Costs

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
        "backtests_per_s": _stats([jobs / s for s in runs]),
        "trades_match": counts == ours,
        "trade_mismatches": sum(a != b for x, y in zip(counts, ours, strict=True) for a, b in zip(x, y, strict=True)),
    }


def _backtesting_sma(plan: Plan, grid: list[dict[str, Any]], candles: Candles, ours: list[int]) -> dict[str, Any]:
    """backtesting.py on the same candles and costs, a few parameter sets per repeat (it takes seconds each)."""
    import warnings

    import backtesting  # type: ignore[import-untyped]
    import backtesting.backtesting  # type: ignore[import-untyped]
    import pandas as pd
    from backtesting import Backtest, Strategy  # type: ignore[import-untyped]

    from backfarm.engine.costs import Costs

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
        "backtests_per_s": _stats([1.0 / s for s in runs]),
        "params_run": len(picks),
        "trades_match": counts == expected,
        "trade_mismatches": sum(a != b for a, b in zip(counts, expected, strict=True)),
    }


# --- the farm -----------------------------------------------------------------------------------------------------


def bench_farm(plan: Plan, settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    """The standard sweep through the farm (Celery + Redis) with 1 and 2 worker processes, end to end."""
    with _redis(plan.redis_url) as (url, private):
        farm_settings = replace(settings, redis_url=url)
        rows = []
        for concurrency in (1, 2):
            progress(f"farm: {concurrency} worker process(es)")
            rows.append(_farm_run(plan, farm_settings, concurrency))
        return {"private_redis": private, "runs": rows}


@contextlib.contextmanager
def _redis(configured: str | None) -> Iterator[tuple[str, bool]]:
    """A private ``redis-server`` on a free port when one is installed, else the configured URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        if not configured:
            raise ConfigError("the farm benchmark needs redis-server on PATH or a Redis URL (--redis)")
        yield configured, False
        return
    directory = Path(tempfile.mkdtemp(prefix="backfarm-bench-redis-"))
    password = secrets.token_hex(16)
    port = _free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
           "--appendonly", "no", "--requirepass", password, "--logfile", str(directory / "redis.log")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    try:
        _wait_for_redis(url, proc)
        yield url, True
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(directory, ignore_errors=True)


def _free_port() -> int:
    """A free TCP port on 127.0.0.1, never Redis' default 6379."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


def _wait_for_redis(url: str, proc: subprocess.Popen[bytes]) -> None:
    import redis

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError("the benchmark's redis-server exited at start-up")
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis.from_url(url, socket_timeout=1).ping()
            return
        time.sleep(0.05)
    raise ConfigError("the benchmark's redis-server did not start within 15 s")


def _farm_run(plan: Plan, settings: Settings, concurrency: int) -> dict[str, Any]:
    """Start one worker with ``concurrency`` processes, warm it, time the sweep ``repeats`` times, stop it."""
    from backfarm.leaderboard.redis_store import RedisStore
    from backfarm.workers.app import close_app, create_app

    name = f"bench{concurrency}-{os.getpid()}@{socket.gethostname()}"
    worker = _start_worker(settings, concurrency, name)
    app = create_app(settings)
    store = RedisStore(settings.redis_url or "")
    try:
        _wait_worker(app, name, worker)
        # Warm: every worker process loads its kernels and candles once, as a long-running farm has done.
        _farm_sweep(plan.request(grid=False, fee_bps=_fresh_fee()), settings, store, app)
        _farm_sweep(plan.request(fee_bps=_fresh_fee()), settings, store, app)
        walls, lean, jobs = [], [], 0
        for _ in range(plan.repeats):
            wall, jobs = _farm_sweep(plan.request(fee_bps=_fresh_fee()), settings, store, app)
            walls.append(wall)
        for _ in range(plan.repeats):
            wall, jobs = _farm_sweep(plan.request(fee_bps=_fresh_fee(), curves=False), settings, store, app)
            lean.append(wall)
        peaks = [p for p in (_vm_hwm_mb(pid) for pid in _process_tree(worker.pid)) if p is not None]
    finally:
        store.close()
        close_app(app)
        _stop(worker)
    return {
        "workers": concurrency,
        "jobs": jobs,
        "backtests_per_s": _stats([jobs / w for w in walls]),
        "seconds": _stats(walls),
        "no_curves_backtests_per_s": _stats([jobs / w for w in lean]),
        "peak_mb_per_process": max(peaks) if peaks else None,
    }


_FEES = itertools.count(1)


def _fresh_fee() -> float:
    """The default fee nudged by a few 1e-6 bps: new job ids, so the farm computes the sweep again instead of
    finding it done (the store keeps results; that is the point of it)."""
    return 60.0 + next(_FEES) * 1e-6


def _start_worker(settings: Settings, concurrency: int, name: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BACKFARM_REDIS_URL": settings.redis_url or "", "BACKFARM_DATA_DIR": str(settings.data_dir)}
    cmd = [sys.executable, "-m", "backfarm", "worker", f"--concurrency={concurrency}", "--queues=backtest,data",
           "--loglevel=WARNING", f"--name={name}"]  # fmt: skip
    log = open(settings.data_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_worker(app: Any, name: str, worker: subprocess.Popen[bytes]) -> None:
    from backfarm.tasks.farm import live_workers

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise ConfigError(f"the benchmark's worker exited at start-up (exit code {worker.returncode})")
        if name in live_workers(app, timeout=0.5):
            return
        time.sleep(0.2)
    raise ConfigError("the benchmark's worker did not answer within 120 s")


def _farm_sweep(request: SweepRequest, settings: Settings, store: Any, app: Any) -> tuple[float, int]:
    """Submit a sweep and wait for it as ``backfarm backtest`` does: (seconds from submit to seen complete, jobs)."""
    from backfarm.tasks import farm
    from backfarm.tasks.sweep import build_expansion

    expansion = build_expansion(request, settings)
    started = time.perf_counter()
    sweep_id = farm.submit(expansion, settings, store, app, curves=request.curves)
    final = farm.wait(sweep_id, settings, store, app, timeout_s=FARM_TIMEOUT_S)
    wall = time.perf_counter() - started
    if not final.complete:
        raise ConfigError(f"the farm did not finish benchmark sweep {sweep_id} within {FARM_TIMEOUT_S:.0f} s")
    if final.dead:
        raise ConfigError(f"benchmark sweep {sweep_id} has {final.dead} dead jobs")
    return wall, len(expansion.jobs)


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(parents.get(current, []))
    return out


def _stop(worker: subprocess.Popen[bytes]) -> None:
    """Warm shutdown, then kill the whole process group if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)


# --- ratios, targets and the printed report ------------------------------------------------------------------------


def _best_embedded(report: dict[str, Any]) -> dict[str, Any]:
    return max(report["embedded"], key=lambda row: row["workers"])


def ratios(report: dict[str, Any]) -> dict[str, float | None]:
    """Every ratio the report shows."""
    emb = _best_embedded(report)
    one = min(report["embedded"], key=lambda row: row["workers"])
    rate = emb["backtests_per_s"]["median"]
    out: dict[str, float | None] = {
        "embedded_scaling": rate / one["backtests_per_s"]["median"],
        "vs_seeds": rate / SEEDS_RATE,
        "per_core_vs_memory_floor": report["per_core"]["backtests_per_s"]
        / report["per_core"]["memory_floor"]["backtests_per_s"],
    }
    refs = report.get("references") or {}
    ours = (refs.get("backfarm") or {}).get("embedded_backtests_per_s", {}).get("median")
    ours_one = (refs.get("backfarm") or {}).get("one_process_backtests_per_s", {}).get("median")
    for key, name in (("vectorbt", "vs_vectorbt"), ("backtesting_py", "vs_backtesting_py")):
        theirs = (refs.get(key) or {}).get("backtests_per_s", {}).get("median")
        out[name] = ours / theirs if ours and theirs else None
        out[f"{name}_one_process"] = ours_one / theirs if ours_one and theirs else None
    farm_runs = (report.get("farm") or {}).get("runs") or []
    if len(farm_runs) == 2:
        out["farm_scaling"] = farm_runs[1]["backtests_per_s"]["median"] / farm_runs[0]["backtests_per_s"]["median"]
        out["farm_vs_embedded"] = farm_runs[1]["backtests_per_s"]["median"] / rate
    scaling = report.get("days_scaling")
    if scaling and len(scaling["rows"]) > 1:
        out["scaling_last_vs_first"] = scaling["rows"][-1]["time_ratio"]
        out["scaling_bars_ratio"] = scaling["rows"][-1]["bars_ratio"]
    return out


def targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each of the issue's targets: the measured value and whether it is met (``None`` when not measured)."""
    emb = _best_embedded(report)["backtests_per_s"]["median"]
    farm_runs = (report.get("farm") or {}).get("runs") or []
    farm2 = farm_runs[-1]["backtests_per_s"]["median"] if farm_runs else None
    peaks = [report["memory"].get("parent_peak_mb"), report["memory"].get("child_peak_mb")]
    peaks += [row.get("peak_mb_per_process") for row in farm_runs]
    peaks.append((report.get("days_scaling") or {}).get("child_peak_mb"))
    peak = max((p for p in peaks if p is not None), default=None)
    scaling = report.get("days_scaling")
    rows = scaling["rows"] if scaling else []
    growth = rows[-1]["time_ratio"] / rows[-1]["bars_ratio"] if len(rows) > 1 else None
    values: dict[str, tuple[float | None, float, bool]] = {
        "embedded_backtests_per_s": (emb, TARGETS["embedded_backtests_per_s"], True),
        "farm_2_workers_backtests_per_s": (farm2, TARGETS["farm_2_workers_backtests_per_s"], True),
        "vs_vectorbt": (report["ratios"].get("vs_vectorbt"), TARGETS["vs_vectorbt"], True),
        "screen_seconds": (report["screen"]["seconds"]["median"], TARGETS["screen_seconds"], False),
        "peak_mb_per_process": (peak, TARGETS["peak_mb_per_process"], False),
        "time_growth_vs_linear": (growth, TARGETS["time_growth_vs_linear"], False),
    }
    return {
        name: {"value": value, "target": target, "met": None if value is None else (value >= target) == higher}
        for name, (value, target, higher) in values.items()
    }


def _fmt_stats(stats: Stats, unit: str = "/s", digits: int = 0) -> str:
    return (
        f"{stats['median']:,.{digits}f}{unit} (min {stats['min']:,.{digits}f}, max {stats['max']:,.{digits}f}, "
        f"{stats['runs']} runs)"
    )


def print_report(report: dict[str, Any]) -> None:
    """The report for people: one section per measurement, ratios and targets last."""
    out = state.console.print
    cfg = report["config"]
    out(
        f"[bold]backfarm bench[/] · {report['machine']['cores']} cores · {cfg['jobs']:,} jobs "
        f"({cfg['strategies']} strategies, default grids) × {len(cfg['symbols'])} symbols × {cfg['days']} days of "
        f"1m bars ({cfg['bars']:,}) · synthetic candles · medians of {cfg['repeats']} runs"
    )
    out(f"start-up kept out of the timings: kernels {report['warm_up_s']:.2f} s, candles {report['data_s']:.2f} s")
    pc = report["per_core"]
    out("\n[bold]per core[/] (one process, one symbol, indicators shared in a batch, artifacts included, no store):")
    for name, row in pc["strategies"].items():
        out(f"  {name:<16}{row['grid']:>4} params  {_fmt_stats(row['us_per_backtest'], ' µs', 0)}")
    floor = pc["memory_floor"]
    out(
        f"  all: {pc['us_per_backtest']:,.0f} µs/backtest = {pc['backtests_per_s']:,.0f}/s; memory floor (reading "
        f"o/h/l/c once): {floor['us_per_backtest']:,.0f} µs = {floor['backtests_per_s']:,.0f}/s"
    )
    sc = report["screen"]
    out(f"\n[bold]the seeds' {sc['jobs']}-backtest screen[/] (warm, in-process): {_fmt_stats(sc['seconds'], ' s', 3)}")
    out("\n[bold]standard sweep, embedded executor[/] (executor: pool start, backtests, store commits):")
    for row in report["embedded"]:
        out(
            f"  {row['workers']} worker(s): {_fmt_stats(row['backtests_per_s'])}; end to end (validation, data, "
            f"manifest) {row['end_to_end_backtests_per_s']['median']:,.0f}/s"
        )
    lean = report.get("embedded_no_curves")
    if lean:
        out(
            f"  {lean['workers']} worker(s), --no-curves (no equity curves and trades stored): "
            f"{_fmt_stats(lean['backtests_per_s'])}"
        )
    mem = report["memory"]
    out(f"  peak memory: parent {_mb(mem['parent_peak_mb'])}, largest pool process {_mb(mem['child_peak_mb'])}")
    _print_scaling(report.get("days_scaling"))
    _print_references(report.get("references"))
    _print_farm(report.get("farm"))
    out("\n[bold]ratios[/]")
    for name, value in report["ratios"].items():
        out(f"  {name:<32}{'—' if value is None else f'{value:,.2f}×'}")
    out("\n[bold]targets[/]")
    for name, row in report["targets"].items():
        verdict = "not measured" if row["met"] is None else ("[green]met[/]" if row["met"] else "[red]missed[/]")
        value = "—" if row["value"] is None else f"{row['value']:,.2f}"
        out(f"  {name:<32}{value:>12}  (target {row['target']:,.2f})  {verdict}")


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} MiB"


def _print_scaling(scaling: dict[str, Any] | None) -> None:
    if not scaling:
        return
    out = state.console.print
    out("\n[bold]scaling with bars[/] (one symbol, every grid, all cores):")
    for row in scaling["rows"]:
        out(
            f"  {row['days']:>4} days ({row['bars']:>7,} bars): {_fmt_stats(row['seconds'], ' s', 3)} · "
            f"{row['us_per_backtest']:,.0f} µs/backtest · time ×{row['time_ratio']:.2f} "
            f"for bars ×{row['bars_ratio']:.2f}"
        )


def _print_references(refs: dict[str, Any] | None) -> None:
    if not refs:
        return
    out = state.console.print
    out(f"\n[bold]SMA-crossover part[/] ({refs['params']} params × {refs['symbols']} symbols = {refs['jobs']} jobs):")
    ours = refs["backfarm"]
    out(f"  {'backfarm, one process, results not stored:':<46} {_fmt_stats(ours['one_process_backtests_per_s'])}")
    out(f"  {'backfarm, embedded executor, results stored:':<46} {_fmt_stats(ours['embedded_backtests_per_s'])}")
    for key, label in (("vectorbt", "vectorbt"), ("backtesting_py", "backtesting.py")):
        row = refs[key]
        if not row.get("available"):
            out(f"  {label + ':':<46} {row['reason']}")
            continue
        match = "trade counts match" if row["trades_match"] else f"{row['trade_mismatches']} trade counts differ"
        out(f"  {label + ' ' + row['version'] + ':':<46} {_fmt_stats(row['backtests_per_s'], '/s', 1)} · {match}")


def _print_farm(farm: dict[str, Any] | None) -> None:
    if not farm:
        return
    out = state.console.print
    where = "a private redis-server" if farm["private_redis"] else "the configured Redis"
    out(f"\n[bold]standard sweep, farm[/] (Celery + {where}, submit to seen complete, as `backfarm backtest` waits):")
    for row in farm["runs"]:
        out(
            f"  {row['workers']} worker process(es): {_fmt_stats(row['backtests_per_s'])}; peak "
            f"{_mb(row['peak_mb_per_process'])} per process; --no-curves "
            f"{row['no_curves_backtests_per_s']['median']:,.0f}/s"
        )
