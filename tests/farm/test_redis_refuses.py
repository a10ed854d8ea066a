"""Redis that refuses writes (maxmemory reached under noeviction, a read-only replica) and Redis that does not answer:
one line naming the cause, workers that try the batch again instead of dropping it, and nothing written twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfarm.cli import app
from backfarm.errors import RedisRefusesWrites, RedisUnreachable
from backfarm.farm.tasks.backtest import ride_out
from backfarm.results.redis_store import RedisStore
from tests.redis_server import RedisServer
from tests.results.contract import make_record


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
