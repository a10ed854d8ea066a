"""Farm fixtures: real ``backfarm worker`` subprocesses on a real Redis, with short time limits.

Every worker runs ``python -m backfarm worker`` in its own process group (so a test can SIGKILL a whole worker, pool
and all) and dies with the test process. The clocks are short so fault recovery fits in a test:
soft 8 s < hard 10 s < visibility 15 s, overdue messages looked for every second.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backfarm.config import Settings
from backfarm.leaderboard.model import Filters
from backfarm.leaderboard.redis_store import RedisStore
from backfarm.strategies.registry import register, strategy_names
from backfarm.sweeps.spec import Expansion, SweepSpec, expand

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FARM_ENV = {
    "BACKFARM_TASK_SOFT_TIME_LIMIT": "8",
    "BACKFARM_TASK_TIME_LIMIT": "10",
    "BACKFARM_VISIBILITY_TIMEOUT": "15",
    "BACKFARM_RESTORE_INTERVAL": "1",
    "BACKFARM_MAX_ATTEMPTS": "3",
    "BACKFARM_WORKER_MEMO_MB": "64",
}
"""The test clocks. Recovery after a lost worker takes the visibility timeout plus about a second."""
READY_TIMEOUT_S = 90.0


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> None:
    """Poll ``predicate`` until it is truthy; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)  # polling for a state change, not timing anything


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Worker:
    """One ``backfarm worker`` subprocess and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        """Everything the worker logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def count(self, needle: str) -> int:
        """How many log lines contain ``needle``."""
        return sum(needle in line for line in self.text().splitlines())

    @property
    def busy(self) -> bool:
        """It has received a batch it has not finished."""
        return self.count("backfarm.backtest.batch") > 0 and self.count("] received") > self.count("] succeeded")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool), like a host or container dying."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@dataclass
class Farm:
    """Starts workers against one Redis with one environment, and kills them all at the end."""

    env: dict[str, str]
    logs: Path
    workers: list[Worker] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        """The settings the client side uses (same clocks as the workers)."""
        return Settings.from_env(self.env)

    def start(self, name: str, *, prefix: Sequence[str] = (), url: str | None = None, concurrency: int = 1) -> Worker:
        """Start ``backfarm worker`` (optionally inside ``prefix``, e.g. ``ip netns exec NS``)."""
        env = dict(self.env)
        if url is not None:
            env["BACKFARM_REDIS_URL"] = url
        log = self.logs / f"{name}.log"
        cmd = [*prefix, sys.executable, "-m", "backfarm", "worker", f"--concurrency={concurrency}"]
        cmd += [f"--name={name}@test", "--loglevel=INFO", "--queues=backtest,data"]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        worker = Worker(name, proc, log)
        self.workers.append(worker)
        return worker

    def ready(self, *workers: Worker) -> None:
        """Wait until every worker logged that it is ready (connected, pool started)."""
        for worker in workers:
            wait_for(
                lambda w=worker: w.proc.poll() is not None or f"{w.name}@test ready." in w.text(),
                READY_TIMEOUT_S,
                f"worker {worker.name} to start",
            )
            assert worker.proc.poll() is None, f"worker {worker.name} exited:\n{worker.text()[-3000:]}"

    def close(self) -> None:
        """Kill every worker still running."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.kill()


@pytest.fixture
def farm_env(tmp_path: Path, redis_url: str, plugin_path: str) -> dict[str, str]:
    """Worker/client environment: the test Redis, a private data directory, short clocks, the chaos plugin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFARM_")}
    env.update(FARM_ENV)
    env.update(
        BACKFARM_REDIS_URL=redis_url,
        BACKFARM_DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=os.pathsep.join([plugin_path, str(ROOT)]),
        COLUMNS="200",
        OMP_NUM_THREADS="1",
    )
    return env


@pytest.fixture
def farm(farm_env: dict[str, str], tmp_path: Path) -> Iterator[Farm]:
    """A farm with no workers yet; every worker started through it is killed at the end of the test."""
    logs = tmp_path / "logs"
    logs.mkdir()
    f = Farm(farm_env, logs)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A directory that installs ``farmplugin.Chaos`` as a ``backfarm.strategies`` plugin for the workers."""
    site = tmp_path_factory.mktemp("plugin-site")
    dist = site / "backfarm_test_chaos-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: backfarm-test-chaos\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[backfarm.strategies]\nchaos = farmplugin:Chaos\n")
    (site / "farmplugin.py").write_text((HERE / "farmplugin.py").read_text())
    return str(site)


@pytest.fixture(scope="session")
def chaos() -> None:
    """The chaos strategy, registered in the test process too (the client expands sweeps that use it)."""
    if "chaos" not in strategy_names():
        from tests.farm.farmplugin import Chaos

        register(Chaos)


def chaos_expansion(param_sets: list[dict[str, int]], symbols: tuple[str, ...] = ("BTC-USD",)) -> Expansion:
    """A one-day, hourly sweep of the chaos strategy with explicit parameter sets."""
    params = {"chaos": param_sets}
    spec = SweepSpec(
        strategies=("chaos",), symbols=symbols, granularity="1h", days=1, params=params, source="synthetic"
    )
    return expand(spec)


def assert_exactly_once(store: RedisStore, sweep_id: str, dead: int = 0) -> None:
    """Every expected job is done (or the given number dead), on the board once, with no conflicts, queues empty."""
    info = store.sweep(sweep_id)
    assert info is not None
    assert (info.done, info.dead) == (info.total - dead, dead)
    manifest = set(store.manifest(sweep_id))
    client = store.client
    ranked = client.zrange(store.keys.board("sharpe"), 0, -1)
    nulls = client.smembers(store.keys.nulls("sharpe"))
    on_board = [job for job in [*ranked, *nulls] if job in manifest]
    assert len(on_board) == len(set(on_board)) == info.total - dead
    top = store.top("sharpe", 10**9, Filters(sweep=sweep_id))
    assert len(top) == len({r.job_id for r in top}) == info.total - dead
    assert store.conflicts() == []
    wait_for(lambda: client.llen("backtest") == 0 and client.hlen("unacked") == 0, 30, "the queue to drain")
    assert not list(client.scan_iter("celery-task-meta-*")), "results must be ignored"
