"""Paper fixtures: settings on a private data directory, session stores, replay specs, real paper workers.

Workers are ``tests.workers`` workers on ``--queues paper`` (own process group, die with the test process).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backfarm.candles.load import load_candles
from backfarm.config import Settings
from backfarm.core.candles import bars_per_year
from backfarm.engine.backtest import BacktestResult, run_backtest
from backfarm.farm.client import enqueue_paper
from backfarm.paper.session import run_session
from backfarm.paper.spec import SessionSpec, build_spec, parse_time
from backfarm.paper.store.base import Commit, SessionStore
from backfarm.paper.store.redis_store import RedisSessionStore
from backfarm.paper.store.sqlite import SQLiteSessionStore
from backfarm.results.embedded import EmbeddedStore
from backfarm.strategies.indicators import Indicators
from backfarm.strategies.registry import get_strategy
from tests.workers import Farm, farm_fixture, wait_for, worker_env

PAPER_ENV = {
    "BACKFARM_TASK_SOFT_TIME_LIMIT": "8",
    "BACKFARM_TASK_TIME_LIMIT": "10",
    "BACKFARM_VISIBILITY_TIMEOUT": "120",
    "BACKFARM_RESTORE_INTERVAL": "1",
}
"""Short farm clocks for the paper workers."""
FAST_PARAMS = {
    "momentum": {"lookback": 5, "threshold": 0.0},
    "mean_reversion": {"window": 10, "entry_z": 1.0},
    "breakout": {"entry": 10, "exit": 5},
}
"""Short windows: these strategies trade within a few dozen bars."""


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


class DyingStore(SQLiteSessionStore):
    """A store whose process "dies" (raises ``error``) on its n-th commit, before writing it."""

    def __init__(self, path: Path, die_at: int, error: type[BaseException]) -> None:
        super().__init__(path)
        self.die_at, self.commits, self.error = die_at, 0, error

    def commit(self, session_id: str, token: str, commit: Commit) -> int:
        self.commits += 1
        if self.commits == self.die_at:
            raise self.error()
        return super().commit(session_id, token, commit)


# --- real workers ------------------------------------------------------------------------------------------------


@pytest.fixture
def paper_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    """Worker and client environment: the test Redis, a private data directory, short farm clocks."""
    return worker_env(redis_url, tmp_path / "data", **PAPER_ENV)


@pytest.fixture
def paper_farm(paper_env: dict[str, str], tmp_path: Path) -> Iterator[Farm]:
    """A farm of paper workers, none started yet; every worker started through it is killed at the end."""
    yield from farm_fixture(paper_env, tmp_path, queues="paper")


def uninterrupted(
    settings: Settings, tmp_path: Path, strategies: list[str], symbols: list[str], duration: str, start: str, **kw: Any
) -> tuple[SQLiteSessionStore, SessionSpec, Any]:
    """The replay session of these arguments run in this process at max speed, uninterrupted: its store, its spec
    and its outcome (what a session interrupted on the farm must end up with)."""
    spec = replay_spec(strategies, symbols, duration, start, **kw)
    local = SQLiteSessionStore(tmp_path / "reference.sqlite")
    local.create(spec)
    outcome = run_session(local, spec.session_id, settings, results=EmbeddedStore(tmp_path / "reference-results"))
    return local, spec, outcome


def bars_done(store: SessionStore, session_id: str) -> int:
    """Bars every symbol of the session has played, by its last checkpoint."""
    checkpoint = store.checkpoint(session_id)
    return min(checkpoint.cursor["bars_done"].values()) if checkpoint else 0


def run_on_worker(farm: Farm, name: str, settings: Settings, spec: SessionSpec, bars: int) -> tuple[Any, Any]:
    """Store ``spec`` in the farm's Redis, start paper worker ``name``, hand it the session and wait until it has
    played ``bars`` bars: the session store and the worker."""
    store = RedisSessionStore(settings.require_redis_url())
    store.create(spec)
    worker = farm.start(name)
    farm.ready(worker)
    enqueue_paper(settings, spec)
    wait_for(lambda: bars_done(store, spec.session_id) >= bars, 60, f"the session to get going on {name}")
    return store, worker
