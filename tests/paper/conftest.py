"""Paper fixtures: settings on a private data directory, session stores, replay specs, real paper workers.

Workers run ``python -m backfarm worker --queues paper`` in their own process group (SIGKILL takes the whole worker,
pool and all) and die with the test process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backfarm.candles.load import load_candles
from backfarm.candles.schema import bars_per_year
from backfarm.config import Settings
from backfarm.engine.backtest import BacktestResult, run_backtest
from backfarm.paper.checkpoint import SQLiteSessionStore
from backfarm.paper.spec import SessionSpec, build_spec, parse_time
from backfarm.strategies.indicators import Indicators
from backfarm.strategies.registry import get_strategy

ROOT = Path(__file__).resolve().parents[2]
FAST_PARAMS = {
    "momentum": {"lookback": 5, "threshold": 0.0},
    "mean_reversion": {"window": 10, "entry_z": 1.0},
    "breakout": {"entry": 10, "exit": 5},
}
"""Short windows: these strategies trade within a few dozen bars."""


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.05) -> None:
    """Poll ``predicate`` until truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)  # polling for a state change, not timing anything


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded settings on a private data directory."""
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteSessionStore]:
    store = SQLiteSessionStore(tmp_path / "paper.sqlite")
    try:
        yield store
    finally:
        store.close()


def replay_spec(strategies: list[str], symbols: list[str], duration: str, start: str, **kw: Any) -> SessionSpec:
    """A synthetic-candle replay spec."""
    return build_spec(strategies, symbols, duration, feed="replay", source="synthetic", start=start, **kw)


def reference_backtests(spec: SessionSpec, settings: Settings) -> dict[str, BacktestResult]:
    """run_backtest per account over the session window, exposures computed from the session's first buffer bar."""
    start = parse_time(str(spec.start))
    step = spec.bar_seconds
    warm = spec.warmup_bars()
    out = {}
    for symbol in spec.symbols:
        lo = start.timestamp() - warm * step
        hi = start.timestamp() + spec.window_bars * step
        candles = load_candles(settings, spec.source, symbol, spec.granularity, _utc(lo), _utc(hi))
        offset = int(np.searchsorted(candles.ts, int(start.timestamp()) * 10**9))
        window = candles.slice(offset, len(candles))
        indicators = Indicators(candles)
        for name, params in spec.strategies:
            exposure = get_strategy(name).exposure(indicators, dict(params))[offset:]
            out[f"{name}@{symbol}"] = run_backtest(
                window.open, window.high, window.low, window.close, exposure, spec.costs, spec.capital,
                bars_per_year(step), record=True,
            )  # fmt: skip
    return out


def _utc(seconds: float):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC)


# --- real workers ------------------------------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class PaperWorker:
    """One ``backfarm worker --queues paper`` subprocess and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@dataclass
class PaperFarm:
    """Starts paper workers with one environment; kills them all at the end."""

    env: dict[str, str]
    logs: Path
    workers: list[PaperWorker] = field(default_factory=list)

    def start(self, name: str) -> PaperWorker:
        log = self.logs / f"{name}.log"
        cmd = [sys.executable, "-m", "backfarm", "worker", "--concurrency=1", f"--name={name}@test"]
        cmd += ["--loglevel=INFO", "--queues=paper"]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        worker = PaperWorker(name, proc, log)
        self.workers.append(worker)
        return worker

    def ready(self, worker: PaperWorker, timeout: float = 90.0) -> None:
        wait_for(
            lambda: worker.proc.poll() is not None or f"{worker.name}@test ready." in worker.text(),
            timeout,
            f"worker {worker.name} to start",
            every=0.1,
        )
        assert worker.proc.poll() is None, f"worker {worker.name} exited:\n{worker.text()[-3000:]}"

    def close(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.kill()


@pytest.fixture
def paper_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """Worker and client environment: the test Redis, a private data directory, short farm clocks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFARM_")}
    env.update(
        BACKFARM_REDIS_URL=redis_url,
        BACKFARM_DATA_DIR=str(tmp_path / "data"),
        BACKFARM_TASK_SOFT_TIME_LIMIT="8",
        BACKFARM_TASK_TIME_LIMIT="10",
        BACKFARM_VISIBILITY_TIMEOUT="120",
        BACKFARM_RESTORE_INTERVAL="1",
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
    )
    return env


@pytest.fixture
def paper_farm(paper_env: dict[str, str], tmp_path: Path) -> Iterator[PaperFarm]:
    logs = tmp_path / "logs"
    logs.mkdir()
    farm = PaperFarm(paper_env, logs)
    try:
        yield farm
    finally:
        farm.close()
