"""Redis that refuses writes (maxmemory reached under noeviction, a read-only replica) and Redis that does not answer:
one line naming the cause, workers that try the batch again instead of dropping it, and nothing written twice."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfarm._util.outage import Outage
from backfarm.cli import app, state
from backfarm.cli import paper as paper_cli
from backfarm.core.results import SweepRecord
from backfarm.errors import RedisRefusesWrites, RedisUnreachable
from backfarm.farm.tasks.backtest import ride_out
from backfarm.paper.spec import build_spec
from backfarm.paper.store.redis_store import RedisSessionStore
from backfarm.results.redis_store import RedisStore
from tests.redis_server import RedisServer
from tests.results.contract import make_record
from tests.workers import wait_for


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with noeviction, as the compose file runs it."""
    with RedisServer(password="full-pw", directory=tmp_path / "redis") as server:
        server.client().config_set("maxmemory-policy", "noeviction")
        yield server


def _fill(server: RedisServer) -> None:
    """Make Redis refuse writes: a maxmemory far below what it already uses."""
    server.client().config_set("maxmemory", "1")


def test_a_full_redis_is_one_line_and_the_put_lands_once_after_the_limit_is_raised(full_redis: RedisServer) -> None:
    with RedisStore(full_redis.url) as store:
        store.put([make_record("a")])
        _fill(full_redis)
        with pytest.raises(RedisRefusesWrites, match=r"refuses writes \(OOM .*\): its maxmemory is reached") as err:
            store.put([make_record("b")])
        assert "\n" not in str(err.value) and "full-pw" not in str(err.value) and err.value.exit_code == 3
        assert store.get("b") is None  # nothing half-written
        full_redis.client().config_set("maxmemory", "0")
        assert store.put([make_record("b")]).inserted == 1
        assert store.put([make_record("b")]).duplicates == 1
        assert sorted(r.job_id for r in store.iter_results()) == ["a", "b"]


def test_a_read_only_redis_names_the_fix(full_redis: RedisServer) -> None:
    with RedisStore(full_redis.url) as store:
        full_redis.client().config_set("replica-read-only", "yes")
        full_redis.client().replicaof("127.0.0.1", "1")  # a replica of nothing: read-only all the same
        try:
            with pytest.raises(RedisRefusesWrites, match="read-only replica: point BACKFARM_REDIS_URL at the primary"):
                store.put([make_record("c")])
        finally:
            full_redis.client().replicaof("no", "one")


def test_the_cli_names_a_full_redis_in_one_line(full_redis: RedisServer, tmp_path: Path) -> None:
    env = {"BACKFARM_REDIS_URL": full_redis.url, "BACKFARM_DATA_DIR": str(tmp_path / "data")}
    _fill(full_redis)
    result = CliRunner().invoke(
        app, ["backtest", "--source", "synthetic", "--days", "1", "--granularity", "1h"], env=env
    )
    assert result.exit_code == 3, result.output
    err = result.stderr
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "refuses writes" in err and "maxmemory" in err and "full-pw" not in err


def test_a_batch_is_tried_again_while_redis_is_away_then_lands() -> None:
    clock = [0.0]
    calls: list[float] = []

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    def work() -> str:
        calls.append(clock[0])
        if len(calls) == 1:
            raise RedisUnreachable("cannot reach Redis at redis://127.0.0.1:1/0: refused")
        if len(calls) < 4:
            raise RedisRefusesWrites("Redis refuses writes (OOM ...)")
        return "committed"

    assert ride_out(work, 120.0, sleep=sleep, clock=lambda: clock[0]) == "committed"
    assert calls == [0.0, 1.0, 3.0, 7.0]  # backing off 1, 2, 4 s
    calls.clear()
    clock[0] = 0.0

    def never() -> str:
        calls.append(clock[0])
        raise RedisUnreachable("cannot reach Redis")

    with pytest.raises(RedisUnreachable):
        ride_out(never, 30.0, sleep=sleep, clock=lambda: clock[0])
    assert calls == [0.0, 1.0, 3.0, 7.0, 15.0, 30.0]  # then another 15 s wait would pass the 30 s limit: give up


def test_status_watch_rides_out_a_redis_outage(tmp_path: Path) -> None:
    """`status --watch` keeps watching through a Redis restart (it used to exit 3 at once) and ends when the sweep
    completes."""
    server = RedisServer(appendonly=True, password="watch-pw", directory=tmp_path / "redis").start()
    try:
        ids = ("j1", "j2")
        with RedisStore(server.url) as store:
            store.create_sweep(SweepRecord("watched-sweep", 1.0, {}, ids, "synthetic"))
            store.put([make_record("j1")])
        env = {**os.environ, "BACKFARM_REDIS_URL": server.url, "BACKFARM_DATA_DIR": str(tmp_path / "data")}
        cmd = [sys.executable, "-m", "backfarm", "status", "watched-sweep", "--watch", "--interval", "0.2"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        admin = server.client()

        def reads() -> int:  # commands that are not this test's own INFO (the watch reading the sweep)
            stats = admin.info("commandstats")
            return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_auth"))

        base = reads()
        # Watching: the command has refreshed a few times (each refresh reads the sweep: a handful of commands).
        wait_for(lambda: proc.poll() is None and reads() - base > 60, 30, "status --watch to refresh a few times")
        admin.close()
        server.stop()
        outage_ends = time.monotonic() + 4.0
        while time.monotonic() < outage_ends:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        server.start()
        with RedisStore(server.url) as store:
            store.put([make_record("j2")])
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        server.close()


def test_paper_watch_rides_out_a_redis_outage(tmp_path: Path) -> None:
    """`paper start --wait` (its watch) keeps watching a farm session through a Redis restart and ends with it."""
    server = RedisServer(appendonly=True, password="paper-pw", directory=tmp_path / "redis").start()
    outcome: list[BaseException | None] = []
    try:
        spec = build_spec(["momentum"], ["BTC-USD"], "2h", feed="replay", source="synthetic", start="2026-10-01")
        with RedisSessionStore(server.url) as store:
            store.create(spec)
        state.configure(redis=server.url)

        watched = RedisSessionStore(server.url)  # connected before the outage, as the command's store is

        def watch() -> None:
            try:
                paper_cli._watch(watched, spec.session_id, on_interrupt=lambda: False)
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                outcome.append(exc)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        server.stop()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert not outcome, outcome
            time.sleep(0.2)
        server.start()
        with RedisSessionStore(server.url) as store:
            store.update(spec.session_id, status="finished")
        watcher.join(timeout=60)
        watched.close()
        assert outcome == [None]
    finally:
        state.configure()
        server.close()


def test_an_outage_counts_from_the_first_failed_poll_and_gives_up_at_its_limit() -> None:
    clock = [0.0]
    outage = Outage(10.0, clock=lambda: clock[0])
    assert outage.answered() is None  # nothing to end
    assert outage.failed() == 0.0
    clock[0] = 4.0
    assert outage.failed() == 4.0
    clock[0] = 6.0
    assert outage.answered() == 6.0  # it ends; the next one counts from its own start
    clock[0] = 20.0
    assert outage.failed() == 0.0
    clock[0] = 29.9
    assert outage.failed() == pytest.approx(9.9)
    clock[0] = 30.0
    assert outage.failed() is None  # 10 s: give up
