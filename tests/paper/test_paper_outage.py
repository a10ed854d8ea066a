"""A paper session rides out its store going away: it holds its bars in memory, commits them when the store answers,
takes back a lease that expired meanwhile, and ends exactly as an uninterrupted run — in process, and on a worker of
the farm while its Redis restarts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from backfarm.config import Settings
from backfarm.errors import RedisUnreachable
from backfarm.paper.lease import LeaseKeeper
from backfarm.paper.session import run_session
from backfarm.paper.store.base import Commit
from backfarm.paper.store.redis_store import RedisSessionStore
from backfarm.paper.store.sqlite import SQLiteSessionStore
from backfarm.results.embedded import EmbeddedStore
from tests.paper.conftest import FAST_PARAMS, PAPER_ENV, replay_spec, run_on_worker, uninterrupted
from tests.redis_server import RedisServer
from tests.workers import Farm, wait_for, worker_env

STRATEGIES = ["momentum", "mean_reversion", "breakout"]
SYMBOLS = ["BTC-USD", "ETH-USD"]


class AwayStore(SQLiteSessionStore):
    """A session store that becomes unreachable at its ``away_at``-th commit for ``away_s`` seconds; a lease that
    would have expired meanwhile is gone when it answers again (as Redis lets a key's TTL run out)."""

    def __init__(self, path: Path, away_at: int, away_s: float) -> None:
        super().__init__(path)
        self.away_at, self.away_s = away_at, away_s
        self.commits = self.failed = 0
        self.until: float | None = None
        self.expire: tuple[str, str] | None = None

    def _away(self) -> bool:
        return self.until is not None and time.monotonic() < self.until

    def commit(self, session_id: str, token: str, commit: Commit) -> int:
        self.commits += 1
        if self.commits == self.away_at:
            self.until = time.monotonic() + self.away_s
            self.expire = (session_id, token)
        if self._away():
            self.failed += 1
            raise RedisUnreachable("cannot reach Redis at redis://test (Connection refused)")
        return super().commit(session_id, token, commit)

    def renew(self, session_id: str, token: str, ttl_s: float) -> bool:
        if self._away():
            raise RedisUnreachable("cannot reach Redis at redis://test (Connection refused)")
        if self.expire is not None:  # the outage outlasted the lease: it expired
            self.release(*self.expire)
            self.expire = None
        return super().renew(session_id, token, ttl_s)

    def stop_requested(self, session_id: str) -> bool:
        if self._away():
            raise RedisUnreachable("cannot reach Redis at redis://test (Connection refused)")
        return super().stop_requested(session_id)


def fills_of(store: SQLiteSessionStore | RedisSessionStore, session_id: str) -> list[tuple[Any, ...]]:
    return [(f.fill_id, f.side, f.qty, f.price) for f in store.fills(session_id)]


def test_a_session_holds_its_bars_while_the_store_is_away_and_ends_as_if_it_never_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    spec = replay_spec(STRATEGIES, SYMBOLS, "4h", "2024-06-03T00:00:00Z", params=FAST_PARAMS, lease_s=0.6)
    reference = SQLiteSessionStore(tmp_path / "reference.sqlite")
    reference.create(spec)
    expected = run_session(reference, spec.session_id, settings, results=EmbeddedStore(tmp_path / "r1"))
    assert len(fills_of(reference, spec.session_id)) > 20

    away = AwayStore(tmp_path / "away.sqlite", away_at=60, away_s=2.5)
    away.create(spec)
    with caplog.at_level("WARNING", logger="backfarm"):
        outcome = run_session(away, spec.session_id, settings, results=EmbeddedStore(tmp_path / "r2"))
    assert away.failed >= 2  # commits that met the outage (at max speed the replay runs on meanwhile, and waits)
    assert outcome.status == "finished" and not outcome.resumed
    info = away.get(spec.session_id)
    assert info is not None and info.status == "finished" and info.resumes == 0 and not info.error
    assert fills_of(away, spec.session_id) == fills_of(reference, spec.session_id)
    assert len(away.equity(spec.session_id)) == len(reference.equity(spec.session_id)) == 240 * len(SYMBOLS)
    assert info.final == expected.metrics
    text = caplog.text
    assert "holding its bars in memory" in text and "committed what was held" in text
    assert "the lease expired while the store was unreachable; taken back" in text


def test_a_lease_taken_by_another_runner_is_not_taken_back(tmp_path: Path) -> None:
    spec = replay_spec(STRATEGIES, SYMBOLS, "1h", "2024-06-03T00:00:00Z", params=FAST_PARAMS, lease_s=0.3)
    store = AwayStore(tmp_path / "s.sqlite", away_at=10**9, away_s=0.0)
    store.create(spec)
    assert store.acquire(spec.session_id, "host:1:aaaa", 0.3)
    store.update(spec.session_id, status="running", worker="host:1")
    keeper = LeaseKeeper(store, spec.session_id, "host:1:aaaa", 0.3)
    keeper._unreachable = True  # it just met an outage
    store.release(spec.session_id, "host:1:aaaa")
    assert store.acquire(spec.session_id, "host:2:bbbb", 5.0)  # another runner took it over
    store.update(spec.session_id, worker="host:2")
    keeper.start()
    assert keeper.lost.wait(5.0)  # not ours any more: the runner stops
    keeper.stop()


def test_a_session_on_a_worker_rides_out_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(appendonly=True, password="paper-pw", directory=tmp_path / "redis").start()
    env = worker_env(server.url, tmp_path / "data", **PAPER_ENV)
    settings = Settings.from_env(env)
    # 180 one-minute bars at 12x real time: 15 s of wall clock, a restart of Redis of about 3 s in the middle; the
    # lease (10 s) outlives the outage, so the runner keeps it and carries on.
    spec = replay_spec(STRATEGIES, SYMBOLS, "3h", "2024-06-03T00:00:00Z", speed=720, params=FAST_PARAMS, lease_s=10.0)
    local, reference_spec, expected = uninterrupted(
        settings, tmp_path, STRATEGIES, SYMBOLS, "3h", "2024-06-03T00:00:00Z", params=FAST_PARAMS
    )
    (tmp_path / "logs").mkdir()
    farm = Farm(env, tmp_path / "logs", queues="paper")
    try:
        store, worker = run_on_worker(farm, "paper1", settings, spec, bars=40)
        server.stop()
        time.sleep(3.0)  # the outage itself (a fault held for a while, not a wait for a condition)
        server.start()
        store = RedisSessionStore(server.url)
        wait_for(lambda: store.get(spec.session_id).status == "finished", 90, "the session to finish")
        info = store.get(spec.session_id)
        assert info.resumes == 0 and not info.error  # rode it out in place: never resumed from a checkpoint
        fills = fills_of(store, spec.session_id)
        assert len(fills) == len({f[0] for f in fills})  # no fill twice
        assert fills == fills_of(local, reference_spec.session_id)
        assert len(store.equity(spec.session_id)) == spec.window_bars * len(SYMBOLS)  # no bar missing or twice
        for key, metrics in expected.metrics.items():
            assert info.final[key] == metrics, key
        assert "holding its bars in memory" in worker.text()
    finally:
        farm.close()
        server.close()
