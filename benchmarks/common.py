"""What every benchmark shares: the plan of what to measure, timed sweeps from an empty store, and statistics."""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backfarm.candles.load import load_candles
from backfarm.config import Settings
from backfarm.core.candles import Candles
from backfarm.execution.local import LocalExecutor
from backfarm.results.factory import open_store
from backfarm.sweeps.expand import Expansion
from backfarm.sweeps.run import run_sweep
from backfarm.sweeps.spec import SweepSpec

SEEDS_RATE = 7.6
"""The seeds' headline: 25 backtests of 30 days in 3.3 s."""
STANDARD_SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD", "LINK-USD", "POL-USD")
STANDARD_DAYS = 30
SMA = "ma_crossover"
TARGETS: dict[str, tuple[float, bool]] = {
    "store_big_vs_empty": (0.9, True),
    "leaderboard_over_version_s": (0.5, False),
    "redis_cpu_big_vs_empty": (1.2, False),
    "redis_results_in_2gb": (1_000_000.0, True),
    "bytes_per_result": (2000.0, False),
    "storage_vs_compute": (0.8, True),
    "farm_vs_embedded": (0.85, True),
    "vs_vectorbt": (50.0, True),
    "vs_backtesting_py": (1000.0, True),
    "screen_seconds": (0.5, False),
    "peak_mb_per_process": (500.0, False),
    "time_growth_vs_linear": (1.5, False),
}
"""The targets, each with whether higher is better: ratios measured in one run (issue 13 replaced the absolute
backtests/s of issue 6, which drift several-fold between days on a shared machine), plus the screen's seconds and
the growth with bars (``time_growth_vs_linear``: the longest window's time over the shortest's, divided by their
ratio of bars: 365 days may take at most 1.5 × 365/30 the time of 30)."""
BACKTESTING_PY_RUNS = 2
"""backtesting.py takes seconds per 30-day backtest: a few parameter sets per repeat are enough for its rate."""
FARM_TIMEOUT_S = 600.0

Stats = dict[str, float]


class BenchmarkFailed(RuntimeError):
    """A measurement could not be made (a sweep did not complete, a worker did not start): not a user error."""


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
    store: bool = False
    store_size: int = 1_000_000

    def spec(self, **changes: Any) -> SweepSpec:
        """The standard sweep (grid over every strategy, synthetic candles), with ``changes`` (flags by name)."""
        values: dict[str, Any] = {
            "strategies": self.strategies,
            "symbols": ",".join(self.symbols),
            "grid": True,
            "days": self.days,
            "source": "synthetic",
        }
        values.update(changes)
        return SweepSpec.from_flags(values)


def stats(values: Sequence[float]) -> Stats:
    """Median, min and max of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def timed_sweep(
    spec: SweepSpec, settings: Settings, workers: int | None, curves: bool = True
) -> tuple[float, float, int]:
    """One sweep from an empty store, as ``backfarm backtest`` runs it: (end-to-end seconds, executor seconds, jobs
    computed). Closing the store (SQLite checkpoints its log then) is not timed."""
    fresh_store(settings)
    with open_store(settings) as store:
        started = time.perf_counter()
        outcome = run_sweep(spec, settings, store, LocalExecutor(settings, workers), curves=curves)
        wall = time.perf_counter() - started
    if outcome.stats.failed or outcome.stats.interrupted:
        raise BenchmarkFailed(f"benchmark sweep did not complete: {outcome.stats}")
    return wall, outcome.stats.seconds, outcome.stats.computed


def fresh_store(settings: Settings) -> None:
    """Remove the embedded store so the next run computes every job."""
    shutil.rmtree(settings.store_path, ignore_errors=True)


def window_candles(expansion: Expansion, settings: Settings, symbol: str) -> Candles:
    """``symbol``'s candles over the expansion's period (cached beforehand), as its jobs read them."""
    spec = expansion.spec
    start, end = expansion.windows[0][0], expansion.windows[-1][1]
    return load_candles(settings, spec.source, symbol, spec.granularity, start, end)


def vm_hwm_mb(pid: int | str = "self") -> float | None:
    """Peak resident memory of a process (Linux ``VmHWM``), MiB; ``None`` where /proc is not available."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
