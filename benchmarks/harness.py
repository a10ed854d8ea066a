"""The benchmark behind ``backfarm bench`` and ``make bench``: backtests per second on a fixed standard sweep, side by
side with references.

The standard sweep is the five built-ins over their default grids on 5 symbols × 30 days of 1-minute synthetic
candles (1,285 jobs). It runs on the embedded executor with 1 and all cores, through the farm with 1 and 2 workers
(:mod:`benchmarks.farm`), and its SMA-crossover part runs in vectorbt and backtesting.py when they are installed
(:mod:`benchmarks.references`). The seeds' 25-backtest screen is timed too, and the scaling run shows how time grows
with 30/90/365 days. Every figure is the median of ``repeats`` runs with min–max.

Everything runs in a private temporary data directory: no user data is read or written, no network is used, and the
farm part starts its own ``redis-server`` on a free port when one is installed (so a production farm's queues and
leaderboards are never touched). Start-up work (imports, kernel loading, candle generation) is kept out of the
timings; each timed run starts from an empty result store.
"""

from __future__ import annotations

import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numba
import numpy as np

from backfarm import __version__
from backfarm._util.cpu import default_workers
from backfarm.config import Settings
from backfarm.core.candles import Candles
from backfarm.execution.runner import run_jobs, warm_up
from backfarm.strategies.indicators import Indicators
from backfarm.sweeps.expand import Expansion
from backfarm.sweeps.run import expand_spec, prepare_data
from benchmarks.common import (
    SEEDS_RATE,
    STANDARD_SYMBOLS,
    TARGETS,
    Plan,
    stats,
    timed_sweep,
    vm_hwm_mb,
    window_candles,
)
from benchmarks.farm import bench_farm
from benchmarks.references import bench_references
from benchmarks.store import bench_store


def run_bench(plan: Plan, settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    """Run every measurement of ``plan`` in a private data directory (``settings`` otherwise) and return the report
    (JSON-ready)."""

    with tempfile.TemporaryDirectory(prefix="backfarm-bench-") as tmp:
        settings = replace(settings, data_dir=Path(tmp), redis_url=None)
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
        report["store"] = bench_store(plan, settings, progress) if plan.store else None
    report["ratios"] = ratios(report)
    report["targets"] = targets(report)
    return report


def _machine() -> dict[str, Any]:
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


def _prepare(plan: Plan, settings: Settings) -> tuple[Expansion, float]:
    """Generate (and cache) every window the plan reads, as a sweep does before it runs: the standard sweep's
    expansion, and the seconds it took (kept out of all timings)."""

    standard = expand_spec(plan.spec(), settings)
    scaling = [expand_spec(plan.spec(days=days, symbols=plan.symbols[0]), settings) for days in plan.scaling]
    started = time.perf_counter()
    for expansion in [standard, *scaling]:
        prepare_data(expansion, settings)
    return standard, time.perf_counter() - started


# --- embedded -----------------------------------------------------------------------------------------------------


def bench_screen(plan: Plan, settings: Settings) -> dict[str, Any]:
    """The seeds' screen: 5 strategies × 5 symbols, default parameters, 30 days of 1m, after one warm-up run."""
    spec = plan.spec(grid=False, strategies=None, symbols=",".join(STANDARD_SYMBOLS[: len(plan.symbols)]))
    timed_sweep(spec, settings, None)  # warm: this process's first sweep pays for lazy imports
    walls, jobs = [], 0
    for _ in range(plan.repeats):
        wall, _, jobs = timed_sweep(spec, settings, None)
        walls.append(wall)
    return {"jobs": jobs, "seconds": stats(walls), "backtests_per_s": stats([jobs / w for w in walls])}


def bench_embedded(plan: Plan, settings: Settings, workers: int, curves: bool = True) -> dict[str, Any]:
    """The standard sweep on the embedded executor with ``workers`` processes, from an empty store each run
    (``curves``: as ``backtest --curves/--no-curves``)."""
    spec = plan.spec()
    walls, executor, jobs = [], [], 0
    for _ in range(plan.repeats):
        wall, seconds, jobs = timed_sweep(spec, settings, workers, curves)
        walls.append(wall)
        executor.append(seconds)
    return {
        "workers": workers,
        "jobs": jobs,
        "backtests_per_s": stats([jobs / s for s in executor]),
        "end_to_end_backtests_per_s": stats([jobs / w for w in walls]),
        "seconds": stats(executor),
    }


def bench_per_core(plan: Plan, settings: Settings) -> dict[str, Any]:
    """One process, one symbol: µs per job of each strategy (indicators shared, as in a batch; no store) and the
    memory floor — reading the four price columns once, the least any backtest of the window must do."""

    expansion = expand_spec(plan.spec(symbols=plan.symbols[0]), settings)
    candles = window_candles(expansion, settings, plan.symbols[0])
    indicators = Indicators(candles)
    out: dict[str, Any] = {"bars": len(candles), "strategies": {}}
    total_s, total_jobs = 0.0, 0
    for name in sorted({job.strategy for job in expansion.jobs}):
        jobs = [job for job in expansion.jobs if job.strategy == name]
        run_jobs(jobs, candles, indicators)  # warm: the grid's indicators are computed once, as in a batch
        runs = []
        for _ in range(plan.repeats):
            started = time.perf_counter()
            run_jobs(jobs, candles, indicators)  # one batch: the results built as one table, as a sweep does
            runs.append((time.perf_counter() - started) / len(jobs))
        out["strategies"][name] = {"grid": len(jobs), "us_per_backtest": stats([r * 1e6 for r in runs])}
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


def _memory() -> dict[str, Any]:
    """Peak resident memory so far of this process and of the largest pool process it ran."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"parent_peak_mb": vm_hwm_mb(), "child_peak_mb": children or None}


# --- scaling with bars --------------------------------------------------------------------------------------------


def bench_scaling(plan: Plan, settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    """The standard grid on one symbol at each window length, on all cores; time per backtest and its growth."""
    rows: list[dict[str, Any]] = []
    for days in plan.scaling:
        progress(f"scaling: {days} days")
        spec = plan.spec(days=days, symbols=plan.symbols[0])
        timed_sweep(spec, settings, None)  # warm: first use of this window length
        runs: list[float] = []
        jobs = 0
        for _ in range(plan.repeats):
            _, seconds, jobs = timed_sweep(spec, settings, None)
            runs.append(seconds)
        rows.append({"days": days, "bars": days * 1440, "jobs": jobs, "seconds": stats(runs)})
    base_s, base_bars = rows[0]["seconds"]["median"], rows[0]["bars"]
    for row in rows:
        median_s = row["seconds"]["median"]
        row["time_ratio"] = median_s / base_s
        row["bars_ratio"] = row["bars"] / base_bars
        row["us_per_backtest"] = median_s / row["jobs"] * 1e6
    return {"rows": rows, "child_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


# --- ratios and targets -------------------------------------------------------------------------------------------


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
        paired = farm_runs[1].get("embedded_alternating_backtests_per_s")  # end to end, run by run with the farm
        out["farm_vs_embedded"] = farm_runs[1]["backtests_per_s"]["median"] / (paired["median"] if paired else rate)
    scaling = report.get("days_scaling")
    if scaling and len(scaling["rows"]) > 1:
        out["scaling_last_vs_first"] = scaling["rows"][-1]["time_ratio"]
        out["scaling_bars_ratio"] = scaling["rows"][-1]["bars_ratio"]
    store = report.get("store")
    if store:
        out["store_big_vs_empty"] = store["sweep_into"]["ratio"]
        out["storage_vs_compute"] = store["storage_vs_compute"]["ratio"]
        work = store["storage_vs_compute"]
        per_process = work["compute_only_backtests_per_s"]["median"] / work["workers"]
        out["compute_vs_memory_floor"] = per_process / report["per_core"]["memory_floor"]["backtests_per_s"]
    return out


def targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target: the measured value and whether it is met (``None`` when not measured)."""
    farm_runs = (report.get("farm") or {}).get("runs") or []
    store = report.get("store") or {}
    peaks = [report["memory"].get("parent_peak_mb"), report["memory"].get("child_peak_mb")]
    peaks += [row.get("peak_mb_per_process") for row in farm_runs]
    peaks.append((report.get("days_scaling") or {}).get("child_peak_mb"))
    peaks.append((store.get("readers") or {}).get("peak_mb"))
    peaks.append((store.get("storage_vs_compute") or {}).get("command_peak_mb"))
    peak = max((p for p in peaks if p is not None), default=None)
    scaling = report.get("days_scaling")
    rows = scaling["rows"] if scaling else []
    growth = rows[-1]["time_ratio"] / rows[-1]["bars_ratio"] if len(rows) > 1 else None
    r = report["ratios"]
    redis = store.get("redis") or {}
    readers = [x.get("worst_over_version_s") for x in (store.get("readers") or {}, redis.get("readers") or {})]
    peaks.append((redis.get("readers") or {}).get("peak_mb"))
    peak = max((p for p in peaks if p is not None), default=None)
    values: dict[str, float | None] = {
        "store_big_vs_empty": r.get("store_big_vs_empty"),
        "leaderboard_over_version_s": max((x for x in readers if x is not None), default=None),
        "redis_cpu_big_vs_empty": redis.get("cpu_ratio"),
        "redis_results_in_2gb": 2 * 2**30 / redis["bytes_per_result"] if redis else None,
        "bytes_per_result": store.get("bytes_per_result"),
        "storage_vs_compute": r.get("storage_vs_compute"),
        "farm_vs_embedded": r.get("farm_vs_embedded"),
        "vs_vectorbt": r.get("vs_vectorbt"),
        "vs_backtesting_py": r.get("vs_backtesting_py"),
        "screen_seconds": report["screen"]["seconds"]["median"],
        "peak_mb_per_process": peak,
        "time_growth_vs_linear": growth,
    }
    out = {}
    for name, value in values.items():
        target, higher = TARGETS[name]
        out[name] = {"value": value, "target": target, "met": None if value is None else (value >= target) == higher}
    return out
