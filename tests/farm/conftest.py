"""Farm fixtures: real ``backfarm worker`` subprocesses on a real Redis, with short time limits.

The workers come from ``tests.workers`` (own process group, die with the test process). The clocks are short so
fault recovery fits in a test: soft 8 s < hard 10 s < visibility 15 s, overdue messages looked for every second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backfarm.config import Settings
from backfarm.core.results import Filters
from backfarm.farm.client import FarmExecutor, farm_batch_size
from backfarm.farm.ledger import Ledger
from backfarm.results.redis_store import RedisStore
from backfarm.strategies.registry import load_paths
from backfarm.sweeps.expand import Expansion, expand
from backfarm.sweeps.run import run_sweep
from backfarm.sweeps.spec import SweepSpec
from tests.workers import Farm, Worker, farm_fixture, wait_for, worker_env

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


CHAOS_FILE = HERE / "farmplugin.py"
"""The chaos strategy's file: workers load it from their strategy path, as users' strategy files are."""


@pytest.fixture
def farm_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """Worker/client environment: the test Redis, a private data directory, short clocks, the chaos strategy file."""
    return worker_env(redis_url, tmp_path / "data", COLUMNS="200", BACKFARM_STRATEGY_PATH=str(CHAOS_FILE), **FARM_ENV)


@pytest.fixture
def farm(farm_env: dict[str, str], tmp_path: Path) -> Iterator[Farm]:
    """A farm with no workers yet; every worker started through it is killed at the end of the test."""
    yield from farm_fixture(farm_env, tmp_path)


@pytest.fixture(scope="session")
def chaos() -> None:
    """The chaos strategy, loaded from its file in the test process too (the client expands sweeps that use it),
    with the identity the workers give it."""
    load_paths([CHAOS_FILE])


def chaos_spec(param_sets: list[dict[str, int]], symbols: tuple[str, ...] = ("BTC-USD",)) -> SweepSpec:
    """A one-day, hourly sweep of the chaos strategy with explicit parameter sets."""
    params = {"chaos": param_sets}
    return SweepSpec(
        strategies=("chaos",), symbols=symbols, granularity="1h", days=1, params=params, source="synthetic"
    )


def chaos_expansion(param_sets: list[dict[str, int]], symbols: tuple[str, ...] = ("BTC-USD",)) -> Expansion:
    """:func:`chaos_spec`, expanded into its jobs."""
    return expand(chaos_spec(param_sets, symbols))


def submit(settings: Settings, store: RedisStore, spec: SweepSpec, curves: bool = True) -> str:
    """Record the sweep and enqueue its missing jobs as ``backfarm backtest --detach`` does; returns its id."""
    return run_sweep(spec, settings, store, FarmExecutor(settings, detach=True), curves=curves).sweep_id


def counted_mid_batch(store: RedisStore, sweep_id: str, expansion: Expansion, worker: Worker) -> Callable[[], bool]:
    """A ``wait_for`` condition: ``worker`` is mid-batch *with that batch's attempts counted*, and more batches wait.

    A worker logs "received" before its pool process counts the batch's attempts, so killing or cutting it on
    "received" alone can land before the count, and the redelivery then runs in bulk instead of careful. More jobs
    counted and unfinished than one batch holds means both busy workers have counted theirs.
    """
    size = farm_batch_size(list(expansion.jobs))
    ids = [job.job_id for job in expansion.jobs]

    ledger = Ledger(store.conn)

    def check() -> bool:
        counted = set(ledger.attempts(sweep_id)) - store.existing(ids)
        return worker.busy and len(counted) > size and store.conn.client.llen("backtest") >= 2

    return check


def assert_exactly_once(store: RedisStore, sweep_id: str, dead: int = 0) -> None:
    """Every expected job is done (or the given number dead), on the board once, with no conflicts, queues empty."""
    info = store.sweep(sweep_id)
    assert info is not None
    assert (info.done, info.dead) == (info.total - dead, dead)
    manifest = set(store.manifest(sweep_id))
    client = store.conn.client
    located = client.hmget(store.keys.jobs, sorted(manifest))  # where each result is: one place per job
    on_board = [entry for entry in located if entry is not None]
    assert len(on_board) == len({entry.rsplit(":", 1)[0] for entry in on_board}) == info.total - dead
    top = store.top("sharpe", 10**9, Filters(sweep=sweep_id))
    assert len(top) == len({r.job_id for r in top}) == info.total - dead
    assert store.conflicts() == []
    wait_for(lambda: client.llen("backtest") == 0 and client.hlen("unacked") == 0, 30, "the queue to drain")
    assert not list(client.scan_iter("celery-task-meta-*")), "results must be ignored"
