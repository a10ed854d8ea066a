"""Real ``backfarm worker`` subprocesses for the farm and paper tests, and the environment they run in.

Every worker runs ``python -m backfarm worker`` in its own process group (so a test can SIGKILL a whole worker, pool
and all) and dies with the test process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backfarm.config import Settings
from tests.conftest import ROOT
from tests.redis_server import _die_with_parent

READY_TIMEOUT_S = 90.0


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> None:
    """Poll ``predicate`` until it is truthy; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)  # polling for a state change, not timing anything


def worker_env(redis_url: str, data_dir: Path, *, path: Sequence[str] = (), **extra: str) -> dict[str, str]:
    """This process' environment without any ``BACKFARM_*``, on ``redis_url`` and ``data_dir``, plus ``extra``.

    ``PYTHONPATH`` is ``path`` then the project root; ``OMP_NUM_THREADS`` is 1 (many workers share the machine).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFARM_")}
    env.update(
        BACKFARM_REDIS_URL=redis_url,
        BACKFARM_DATA_DIR=str(data_dir),
        PYTHONPATH=os.pathsep.join([*path, str(ROOT)]),
        OMP_NUM_THREADS="1",
    )
    env.update(extra)
    return env


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
    """Starts workers on ``queues`` against one Redis with one environment, and kills them all at the end."""

    env: dict[str, str]
    logs: Path
    queues: str = "backtest,data"
    workers: list[Worker] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        """The settings the client side uses (same clocks as the workers)."""
        return Settings.from_env(self.env)

    def start(
        self,
        name: str,
        *,
        prefix: Sequence[str] = (),
        url: str | None = None,
        concurrency: int = 1,
        env: dict[str, str] | None = None,
        queues: str | None = None,
    ) -> Worker:
        """Start ``backfarm worker`` (optionally inside ``prefix``, e.g. ``ip netns exec NS``, on ``url``, with
        ``env`` over the farm's environment)."""
        env = {**self.env, **(env or {})}
        if url is not None:
            env["BACKFARM_REDIS_URL"] = url
        log = self.logs / f"{name}.log"
        cmd = [*prefix, sys.executable, "-m", "backfarm", "worker", f"--concurrency={concurrency}"]
        cmd += [f"--name={name}@test", "--loglevel=INFO", f"--queues={queues or self.queues}"]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        worker = Worker(name, proc, log)
        self.workers.append(worker)
        return worker

    def ready(self, *workers: Worker, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until every worker logged that it is ready (connected, pool started)."""
        for worker in workers:
            wait_for(
                lambda w=worker: w.proc.poll() is not None or f"{w.name}@test ready." in w.text(),
                timeout,
                f"worker {worker.name} to start",
            )
            assert worker.proc.poll() is None, f"worker {worker.name} exited:\n{worker.text()[-3000:]}"

    def close(self) -> None:
        """Kill every worker still running."""
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.kill()


def farm_fixture(env: dict[str, str], tmp_path: Path, **kw: Any) -> Iterator[Farm]:
    """A farm fixture's body: a farm with no workers yet, logs under ``tmp_path``, all killed at the end."""
    logs = tmp_path / "logs"
    logs.mkdir()
    farm = Farm(env, logs, **kw)
    try:
        yield farm
    finally:
        farm.close()
