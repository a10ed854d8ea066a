"""The standard sweep through the farm (Celery + Redis) with 1 and 2 worker processes, submit to seen complete.

The farm runs on a private ``redis-server`` (the tests' :class:`~tests.redis_server.RedisServer`, on a free port)
when one is installed, else on the configured Redis; workers are real ``backfarm worker`` processes, and their peak
memory is read from ``/proc``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from celery import Celery

from backfarm.config import Settings
from backfarm.farm.client import FarmClient, FarmExecutor, live_workers
from backfarm.results.redis_store import RedisStore
from backfarm.sweeps.run import run_sweep
from backfarm.sweeps.spec import SweepSpec
from benchmarks.common import FARM_TIMEOUT_S, BenchmarkFailed, Plan, stats, timed_sweep, vm_hwm_mb
from tests.redis_server import RedisServer

WORKER_START_S = 120.0
"""Longest wait for a benchmark worker to answer its first ping (it warms its kernels up first)."""


def bench_farm(plan: Plan, settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    """The standard sweep through the farm (Celery + Redis) with 1 and 2 worker processes, end to end."""
    with _redis(plan.redis_url) as (url, private):
        farm_settings = replace(settings, redis_url=url)
        rows = []
        for concurrency in (1, 2):
            progress(
                f"farm: {concurrency} worker process(es)"
                + (", alternating with the embedded executor" * (concurrency == 2))
            )
            rows.append(_farm_run(plan, farm_settings, concurrency, settings if concurrency == 2 else None))
        return {"private_redis": private, "runs": rows}


@contextlib.contextmanager
def _redis(configured: str | None) -> Iterator[tuple[str, bool]]:
    """A private ``redis-server`` on a free port when one is installed, else the configured URL."""
    if shutil.which("redis-server") is None:
        if not configured:
            raise BenchmarkFailed("the farm benchmark needs redis-server on PATH or a Redis URL (--redis)")
        yield configured, False
        return
    with RedisServer(password=secrets.token_hex(16)) as server:
        yield server.url, True


def _farm_run(plan: Plan, settings: Settings, concurrency: int, embedded: Settings | None) -> dict[str, Any]:
    """Start one worker with ``concurrency`` processes, warm it, time the sweep ``repeats`` times, stop it. With
    ``embedded`` settings, each farm run alternates with the same sweep on the embedded executor with as many
    processes (A B A B ...: a stall of the shared machine hits both), end to end like the farm's."""
    name = f"bench{concurrency}-{os.getpid()}@{socket.gethostname()}"
    worker = _start_worker(settings, concurrency, name)
    try:
        with RedisStore(settings.require_redis_url()) as store, FarmClient(settings, store) as farm:
            _wait_worker(farm.app, name, worker)
            # Warm: every worker process loads its kernels and candles once, as a long-running farm has done.
            _farm_sweep(plan.spec(grid=False, fee_bps=_fresh_fee()), settings, store)
            _farm_sweep(plan.spec(fee_bps=_fresh_fee()), settings, store)
            walls, lean, local, jobs = [], [], [], 0
            for _ in range(max(plan.repeats, 5) if embedded else plan.repeats):
                wall, jobs = _farm_sweep(plan.spec(fee_bps=_fresh_fee()), settings, store)
                walls.append(wall)
                if embedded is not None:
                    local.append(timed_sweep(plan.spec(fee_bps=_fresh_fee()), embedded, concurrency)[0])
            for _ in range(plan.repeats):
                wall, jobs = _farm_sweep(plan.spec(fee_bps=_fresh_fee()), settings, store, curves=False)
                lean.append(wall)
        peaks = [p for p in (vm_hwm_mb(pid) for pid in _process_tree(worker.pid)) if p is not None]
    finally:
        _stop(worker)
    return {
        "workers": concurrency,
        "jobs": jobs,
        "backtests_per_s": stats([jobs / w for w in walls]),
        "seconds": stats(walls),
        "no_curves_backtests_per_s": stats([jobs / w for w in lean]),
        "peak_mb_per_process": max(peaks) if peaks else None,
        "embedded_alternating_backtests_per_s": stats([jobs / w for w in local]) if local else None,
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


def _wait_worker(app: Celery, name: str, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WORKER_START_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise BenchmarkFailed(f"the benchmark's worker exited at start-up (exit code {worker.returncode})")
        if name in live_workers(app, timeout=0.5):
            return
        time.sleep(0.2)  # polling for the worker to come up, not timing anything
    raise BenchmarkFailed(f"the benchmark's worker did not answer within {WORKER_START_S:.0f} s")


def _farm_sweep(spec: SweepSpec, settings: Settings, store: RedisStore, curves: bool = True) -> tuple[float, int]:
    """Submit a sweep and wait for it as ``backfarm backtest`` does: (seconds from submit to seen complete, jobs)."""
    started = time.perf_counter()
    outcome = run_sweep(spec, settings, store, FarmExecutor(settings, timeout_s=FARM_TIMEOUT_S), curves=curves)
    wall = time.perf_counter() - started
    info = store.sweep(outcome.sweep_id)
    if info is None or not info.complete:
        raise BenchmarkFailed(
            f"the farm did not finish benchmark sweep {outcome.sweep_id} within {FARM_TIMEOUT_S:.0f} s"
        )
    if info.dead:
        raise BenchmarkFailed(f"benchmark sweep {outcome.sweep_id} has {info.dead} dead jobs")
    return wall, outcome.total


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
