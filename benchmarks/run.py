"""backfarm benchmarks: backtests per second per core, the seeds' 25-backtest screen, and the standard sweep.

Run with ``make bench`` (or ``python benchmarks/run.py [--json]``). Uses a private temporary data directory and
synthetic candles (30 days of 1-minute bars), so it needs no network and touches no user data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backfarm.candles.load import load_candles
from backfarm.candles.schema import bars_per_year
from backfarm.config import Settings
from backfarm.engine.backtest import run_backtest
from backfarm.engine.costs import Costs
from backfarm.leaderboard.sqlite import SQLiteStore
from backfarm.strategies.indicators import Indicators
from backfarm.strategies.registry import all_strategies
from backfarm.sweeps.jobs import make_batches
from backfarm.sweeps.spec import SweepSpec, expand
from backfarm.tasks.local import batch_size_for, run_local
from backfarm.tasks.runner import CandleMemo, warm_up
from backfarm.tasks.sweep import SweepRequest, run_sweep

SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD", "LINK-USD", "POL-USD")


def _median(times: list[float]) -> tuple[float, float, float]:
    return statistics.median(times), min(times), max(times)


def bench_per_core(settings: Settings, repeats: int) -> dict[str, dict[str, float]]:
    """One process: each built-in with default parameters on 30 days of 1m bars; indicators shared as in a batch."""
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    candles = load_candles(settings, "synthetic", "BTC-USD", "1m", end - timedelta(days=30), end)
    costs = Costs()
    bpy = bars_per_year(candles.bar_seconds)
    out: dict[str, dict[str, float]] = {}
    for name, strategy in sorted(all_strategies().items()):
        grid = list(strategy.default_grid())
        ind = Indicators(candles)
        for params in grid:  # warm: indicators of the grid computed once, as in a batch
            strategy.exposure(ind, params)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for params in grid:
                x = strategy.exposure(ind, params)
                run_backtest(candles.open, candles.high, candles.low, candles.close, x, costs, 10_000.0, bpy)
            times.append((time.perf_counter() - t0) / len(grid))
        cold = []
        for params in grid[:10]:
            t0 = time.perf_counter()
            x = strategy.exposure(Indicators(candles), params)
            run_backtest(candles.open, candles.high, candles.low, candles.close, x, costs, 10_000.0, bpy)
            cold.append(time.perf_counter() - t0)
        med, lo, hi = _median(times)
        out[name] = {
            "bars": len(candles),
            "grid": len(grid),
            "us_per_backtest": med * 1e6,
            "us_min": lo * 1e6,
            "us_max": hi * 1e6,
            "backtests_per_s": 1.0 / med,
            "us_with_fresh_indicators": statistics.median(cold) * 1e6,
        }
    return out


def bench_screen(settings: Settings, repeats: int) -> dict[str, float]:
    """The seeds' screen: 5 strategies × 5 symbols × 30 days of 1m, default params, fresh store each time."""
    times = []
    for i in range(repeats):
        run_settings = settings.with_(data_dir=settings.data_dir)
        store_path = run_settings.store_path
        if store_path.exists():
            store_path.unlink()
        t0 = time.perf_counter()
        outcome = run_sweep(SweepRequest(source="synthetic", fee_bps=60.0 + i * 1e-9), run_settings, workers=1)
        times.append(time.perf_counter() - t0)
        outcome.store.close()
    med, lo, hi = _median(times)
    return {"jobs": 25, "seconds": med, "min": lo, "max": hi}


def bench_sweep(settings: Settings, workers: int, repeats: int) -> dict[str, float]:
    """The standard sweep (default grids × 5 symbols × 30 days of 1m) on the embedded executor."""
    expansion = expand(SweepSpec(grid=True))
    jobs = list(expansion.jobs)
    rates = []
    for r in range(repeats):
        path = settings.data_dir / f"bench-{workers}-{r}.sqlite"
        store = SQLiteStore(path)
        batches = make_batches(jobs, batch_size_for(len(jobs), len({j.data_key for j in jobs}), workers))
        t0 = time.perf_counter()
        stats = run_local(batches, store, settings, None, workers, memo=CandleMemo(settings))
        seconds = time.perf_counter() - t0
        store.close()
        assert stats.computed == len(jobs), stats
        rates.append(len(jobs) / seconds)
    med, lo, hi = _median(rates)
    return {"jobs": len(jobs), "workers": workers, "backtests_per_s": med, "min": lo, "max": hi}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="Print machine-readable JSON.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="backfarm-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp))
        t0 = time.perf_counter()
        warm_up()
        warm = time.perf_counter() - t0
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        for symbol in SYMBOLS:  # fill the cache once, outside the timings
            load_candles(settings, "synthetic", symbol, "1m", end - timedelta(days=30), end)
        report = {
            "warm_up_s": warm,
            "per_core": bench_per_core(settings, args.repeats),
            "screen_25": bench_screen(settings, args.repeats),
            "sweep_1_worker": bench_sweep(settings, 1, args.repeats),
            "sweep_2_workers": bench_sweep(settings, 2, args.repeats),
        }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"kernel warm-up (load from numba cache or compile): {report['warm_up_s']:.2f} s")
    print("\nper core, 30 days of 1-minute bars (43,200), indicators shared across the grid as in a batch:")
    print(f"  {'strategy':<16}{'grid':>6}{'µs/backtest':>14}{'backtests/s':>14}{'µs fresh ind.':>16}")
    for name, row in report["per_core"].items():
        print(
            f"  {name:<16}{row['grid']:>6}{row['us_per_backtest']:>14.0f}{row['backtests_per_s']:>14,.0f}"
            f"{row['us_with_fresh_indicators']:>16.0f}"
        )
    s = report["screen_25"]
    print(
        f"\nseeds' 25-backtest screen (in-process, warm): {s['seconds']:.3f} s (min {s['min']:.3f}, max {s['max']:.3f})"
    )
    one, two = report["sweep_1_worker"], report["sweep_2_workers"]
    print(f"\nstandard sweep, {one['jobs']:,} jobs (default grids × 5 symbols × 30 days 1m), embedded executor:")
    for row in (one, two):
        print(
            f"  {row['workers']} worker(s): {row['backtests_per_s']:,.0f} backtests/s "
            f"(min {row['min']:,.0f}, max {row['max']:,.0f})"
        )
    print(f"  scaling 2 vs 1 workers: {two['backtests_per_s'] / one['backtests_per_s']:.2f}×")
    print(f"  vs the seeds' 7.6 backtests/s: {two['backtests_per_s'] / 7.6:,.0f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
