"""The farm end to end: real ``backfarm worker`` processes on a real Redis, under the faults of DESIGN §10.

"Exactly once" is checked on the store itself (``conftest.assert_exactly_once``): every expected job done, one board
member per job, no conflicting recomputation, queues drained, no Celery result keys.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from typer.testing import CliRunner

from backfarm.cli import app as cli_app
from backfarm.config import Settings
from backfarm.core.jobs import Batch, make_batches
from backfarm.core.results import Filters, SweepInfo
from backfarm.farm import client as farm_api
from backfarm.farm.client import FarmClient
from backfarm.farm.tasks.backtest import BATCH_TASK
from backfarm.results.factory import open_store
from backfarm.results.redis_store import RedisStore
from backfarm.sweeps.expand import expand
from backfarm.sweeps.run import prepare_data, sweep_record
from backfarm.sweeps.spec import SweepSpec
from tests.farm.conftest import assert_exactly_once, chaos_expansion, chaos_spec, counted_mid_batch, submit
from tests.farm.farmplugin import CRASH
from tests.redis_server import RedisServer
from tests.workers import ROOT, Farm, wait_for

runner = CliRunner()
PERIOD = ("--start", "2025-06-01", "--end", "2025-06-02", "--source", "synthetic")
"""A fixed past day, so the farm run and the embedded run expand to the same job ids whenever the test runs."""
EIGHT = "BTC-USD,ETH-USD,SOL-USD,LINK-USD,POL-USD,ADA-USD,XRP-USD,DOGE-USD"


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli_app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def slow_sweep(jobs: int = 200, sleep_ms: int = 30) -> SweepSpec:
    """``jobs`` chaos jobs of ``sleep_ms`` each: long enough to hit a worker or Redis while it runs."""
    return chaos_spec([{"every": n, "sleep_ms": sleep_ms} for n in range(2, 2 + jobs)])


def test_two_workers_run_2000_jobs_exactly_once_with_the_embedded_metrics(farm: Farm, tmp_path: Path) -> None:
    workers = farm.start("w1"), farm.start("w2")
    farm.ready(*workers)
    args = ("backtest", "--grid", "--symbols", EIGHT, *PERIOD, "--top", "3")
    code, out, err = invoke(farm.env, *args)
    assert code == 0, err
    assert "2,056 jobs (2,056 computed, 0 reused)" in out and "top 3 by sharpe" in out and "per strategy" in out
    assert "on the farm, 2 workers answering" in out
    assert all(w.count("succeeded") > 0 for w in workers)  # both took part
    with RedisStore(farm.env["BACKFARM_REDIS_URL"]) as store:
        sweep_id = store.sweeps()[0].sweep_id
        assert_exactly_once(store, sweep_id)
        farm_results = {r.job_id: r for r in store.iter_results(Filters(sweep=sweep_id))}
    code, out, _ = invoke(farm.env, "leaderboard", "--format", "json", "--top", "0")
    rows = json.loads(out)
    assert len(rows) == len({r["job_id"] for r in rows}) == 2056
    # The same sweep on the embedded executor gives the same numbers, job for job.
    embedded = {**farm.env, "BACKFARM_REDIS_URL": "", "BACKFARM_DATA_DIR": str(tmp_path / "embedded")}
    code, out, err = invoke(embedded, *args)
    assert code == 0, err
    assert f"sweep {sweep_id}" in out
    settings = farm.settings.with_(data_dir=tmp_path / "embedded")
    with open_store(type(settings)(**{**settings.__dict__, "redis_url": None})) as local:
        local_results = {r.job_id: r for r in local.iter_results(Filters(sweep=sweep_id))}
    assert local_results.keys() == farm_results.keys()
    assert all(local_results[j].metrics == farm_results[j].metrics for j in farm_results)
    assert all(local_results[j].result_hash == farm_results[j].result_hash for j in farm_results)


def test_a_worker_killed_mid_sweep_loses_nothing(farm: Farm, chaos: None) -> None:
    settings = farm.settings
    spec = slow_sweep()
    victim, survivor = farm.start("victim"), farm.start("survivor")
    farm.ready(victim, survivor)
    with RedisStore(settings.redis_url or "") as store, FarmClient(settings, store) as client:
        sweep_id = submit(settings, store, spec)
        wait_for(counted_mid_batch(store, sweep_id, expand(spec), victim), 30, "the victim to be mid-batch, counted")
        victim.kill()
        # No reconcile allowed: the redelivery after the visibility timeout must do it. (The wait's lost-worker
        # shortcut would otherwise race it: both come about 15 s after the loss.)
        final = client.wait(sweep_id, stall_s=10**6, timeout_s=60, lost_stall_s=10**6)
        assert final.complete and final.reconciled == 0
        assert_exactly_once(store, sweep_id)
        attempts = client.ledger.attempts(sweep_id)
        assert set(attempts.values()) == {1, 2}  # the victim's batch ran twice, nothing more
    assert "'mode': 'careful'" in survivor.text()


@contextmanager
def two_workers_on_their_own_redis(
    farm: Farm, tmp_path: Path
) -> Iterator[tuple[RedisServer, Settings, tuple[Any, ...]]]:
    """A private redis-server (AOF on: it survives a restart) with two ready workers on it; both stopped after."""
    server = RedisServer(appendonly=True, password="own-pw", directory=tmp_path / "redis").start()
    try:
        farm.env["BACKFARM_REDIS_URL"] = server.url
        workers = farm.start("w1"), farm.start("w2")
        farm.ready(*workers)
        yield server, farm.settings, workers
    finally:
        farm.close()
        server.close()


def test_a_redis_restart_mid_sweep_is_survived(farm: Farm, tmp_path: Path, chaos: None) -> None:
    with two_workers_on_their_own_redis(farm, tmp_path) as (server, settings, workers):
        with RedisStore(server.url) as store:
            sweep_id = submit(settings, store, slow_sweep())
            wait_for(lambda: _sweep(store, sweep_id).done >= 20, 30, "the sweep to be under way")
            assert not _sweep(store, sweep_id).complete
        server.restart()
        for w in workers:  # each worker reconnects by itself
            wait_for(lambda w=w: w.count("Connected to redis://") >= 2, 60, f"{w.name} to reconnect")
        with RedisStore(server.url) as store, FarmClient(settings, store) as client:
            # A restart can swallow a message in flight (a worker's BRPOP answered just before the server went away
            # never reaches it, and it is in no queue): the wait re-enqueues what stays missing, as
            # `backfarm backtest` does, here after 20 s without progress instead of the default ~20 min.
            final = client.wait(sweep_id, stall_s=20, timeout_s=120)
            assert final.complete
            assert_exactly_once(store, sweep_id)


def test_a_waiting_client_rides_out_a_redis_outage(farm: Farm, tmp_path: Path, chaos: None) -> None:
    """Redis goes away for a few seconds *while* the client waits and workers commit: the wait shows "unreachable"
    and carries on (it gives up only after BACKFARM_REDIS_OUTAGE), and the sweep completes exactly once."""
    with two_workers_on_their_own_redis(farm, tmp_path) as (server, settings, _):
        updates: list[Any] = []
        outcome: list[Any] = []
        with RedisStore(server.url) as store, FarmClient(settings, store) as client:
            sweep_id = submit(settings, store, slow_sweep())

            def wait() -> None:
                try:
                    outcome.append(client.wait(sweep_id, on_update=updates.append, stall_s=20, timeout_s=180))
                except BaseException as exc:  # noqa: BLE001 - the test reports it
                    outcome.append(exc)

            waiter = threading.Thread(target=wait, daemon=True)
            waiter.start()
            wait_for(lambda: bool(updates) and updates[-1].done >= 20, 30, "the sweep to be under way")
            server.stop()
            wait_for(lambda: any(u.unreachable_s is not None for u in updates), 30, "the wait to see the outage")
            wait_for(lambda: max(u.unreachable_s or 0.0 for u in updates) >= 2.0, 30, "an outage of 2 s")
            server.start()
            waiter.join(timeout=240)
            assert not waiter.is_alive()
            (final,) = outcome
            assert not isinstance(final, BaseException), final
            assert final.complete and final.unreachable_s is None
            assert_exactly_once(store, sweep_id)


def test_a_double_submit_and_a_redelivered_batch_commit_nothing_twice(farm: Farm) -> None:
    spec_args = ["--strategies", "momentum,breakout", "--grid", "--symbols", "BTC-USD,ETH-USD", *PERIOD]
    cmd = [sys.executable, "-m", "backfarm", "backtest", "--detach", *spec_args]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=farm.env, **pipes) for _ in "ab"]  # type: ignore[call-overload]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    (sweep_id,) = {out.decode().strip() for out, _ in outputs}
    expansion = expand(SweepSpec(strategies=("momentum", "breakout"), grid=True, symbols=("BTC-USD", "ETH-USD"),
                                 start="2025-06-01", end="2025-06-02", days=None, source="synthetic"))  # fmt: skip
    assert expansion.sweep_id == sweep_id
    batches = make_batches(expansion.jobs, farm_api.farm_batch_size(expansion.jobs))
    settings = farm.settings
    with RedisStore(settings.redis_url or "") as store, FarmClient(settings, store) as client:
        assert store.conn.client.llen("backtest") == len(batches)  # published once, not twice
        worker = farm.start("w1")
        farm.ready(worker)
        final = client.wait(sweep_id, stall_s=10**6, timeout_s=60)
        assert final.complete
        assert_exactly_once(store, sweep_id)
        assert set(client.ledger.attempts(sweep_id).values()) == {1}
        before = store.conn.client.hgetall(store.keys.jobs), store.conn.client.smembers(store.keys.chunks)
        client.enqueue(sweep_id, [batches[0]])  # a finished batch forced back into the queue
        wait_for(lambda: worker.count("done already") == 1, 30, "the redelivered batch to be skipped")
        assert set(client.ledger.attempts(sweep_id).values()) == {1}
        assert (store.conn.client.hgetall(store.keys.jobs), store.conn.client.smembers(store.keys.chunks)) == before
        assert_exactly_once(store, sweep_id)


def test_a_job_that_always_crashes_ends_dead_and_status_says_why(
    farm: Farm, chaos: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `status` lists the workers that answer its ping: give a busy machine time to answer it.
    monkeypatch.setattr(farm_api, "live_workers", functools.partial(farm_api.live_workers, timeout=5.0))
    settings = farm.settings
    expansion = chaos_expansion([{"every": 2}, {"every": 3}, {"every": 4, "mode": CRASH}, {"every": 5}, {"every": 6}])
    crasher = expansion.jobs[2].job_id
    prepare_data(expansion, settings)
    worker = farm.start("w1")
    farm.ready(worker)
    with RedisStore(settings.redis_url or "") as store, FarmClient(settings, store) as client:
        assert store.create_sweep(sweep_record(expansion))
        client.enqueue(expansion.sweep_id, [Batch(expansion.jobs)])  # crasher mid-batch
        final = client.wait(expansion.sweep_id, stall_s=10**6, timeout_s=60)
        assert final.complete and (final.done, final.dead) == (4, 1)
        assert_exactly_once(store, expansion.sweep_id, dead=1)
        attempts = client.ledger.attempts(expansion.sweep_id)
        assert attempts.pop(crasher) == 4  # three runs that killed their process, the fourth count gave up
        assert set(attempts.values()) == {2}  # its batch-mates ran at most twice
    assert worker.proc.poll() is None  # the pool replaced its dead process; the worker lives on
    code, out, err = invoke(farm.env, "status", expansion.sweep_id[:8], "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["done"], report["dead"], report["complete"]) == (4, 1, True)
    (why,) = report["dead_reasons"]
    assert why["example"] == crasher and why["jobs"] == 1
    assert why["reason"].startswith("gave up after 3 attempts: the worker process died, was killed or hit the time")
    assert report["workers"] == ["w1@test"] and report["attempts"]["max"] == 4
    code, out, _ = invoke(farm.env, "status")
    assert code == 0 and "why jobs are dead" in out and "gave up after 3 attempts" in out and "complete" in out


class Canary:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_a_pickle_message_is_refused_and_runs_no_code(farm: Farm, tmp_path: Path, chaos: None) -> None:
    canary = tmp_path / "canary"
    worker = farm.start("w1")
    farm.ready(worker)
    url = farm.env["BACKFARM_REDIS_URL"]
    headers = {"lang": "py", "task": BATCH_TASK, "id": "pickled-1", "root_id": "pickled-1", "retries": 0}
    with Connection(url) as conn:
        conn.Producer().publish(
            ((Canary(canary),), {}, {}), routing_key="backtest", exchange="", serializer="pickle", headers=headers
        )
    with RedisStore(url) as store:
        wait_for(
            lambda: store.conn.client.llen("backtest") == 0 and store.conn.client.hlen("unacked") == 0,
            30,
            "the refusal",
        )
        wait_for(lambda: "Refusing to deserialize untrusted content of type pickle" in worker.text(), 10, "the log")
        assert not canary.exists()
        # The worker is still healthy afterwards.
        sweep_id = submit(farm.settings, store, chaos_spec([{"every": 2}]))
        with FarmClient(farm.settings, store) as client:
            assert client.wait(sweep_id, stall_s=10**6, timeout_s=30).complete
    assert not canary.exists()


def _sweep(store: RedisStore, sweep_id: str) -> SweepInfo:
    info = store.sweep(sweep_id)
    assert info is not None
    return info
