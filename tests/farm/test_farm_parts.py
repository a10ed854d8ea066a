"""The farm's parts in one process against a real Redis: app settings, the batch task's guards, submit/reconcile/cancel,
the cluster lock and rate limit. No worker processes here (see test_farm_cluster.py for those)."""

from __future__ import annotations

import base64
import itertools
import json
import re
import ssl
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from backfarm._util.connection import check_redis
from backfarm.cli import app as cli_app
from backfarm.config import Settings
from backfarm.core.jobs import Batch, make_batches
from backfarm.errors import AuthError, ConfigError, ServiceUnavailable
from backfarm.farm import client as farm
from backfarm.farm import lifecycle, watch
from backfarm.farm.app import create_app
from backfarm.farm.client import FarmClient
from backfarm.farm.fetch import ClusterLockedSource, RedisRateLimiter
from backfarm.farm.keys import QUEUES, FarmKeys
from backfarm.farm.tasks.backtest import BATCH_TASK, process_batch
from backfarm.farm.tasks.backtest import BatchReport as farm_report
from backfarm.farm.tasks.backtest import _announce as announce
from backfarm.farm.tasks.data import FETCH_TASK
from backfarm.farm.tasks.paper import PAPER_TASK
from backfarm.results.redis_store import RedisStore
from backfarm.sweeps.run import prepare_data, rebuild_expansion, sweep_record
from tests.farm.conftest import chaos_expansion, chaos_spec, submit
from tests.farm.farmplugin import CRASH, RAISE
from tests.workers import wait_for


@pytest.fixture
def settings(farm_env: dict[str, str]) -> Settings:
    return Settings.from_env(farm_env)


@pytest.fixture
def store(redis_url: str) -> Any:
    with RedisStore(redis_url) as s:
        yield s


@pytest.fixture
def client(settings: Settings, store: RedisStore) -> Any:
    """The farm from a client's side, on the test's store."""
    with FarmClient(settings, store) as made:
        yield made


@pytest.fixture
def ctx(settings: Settings) -> Any:
    context = lifecycle.build_context(settings)
    yield context
    context.close()


# --- the Celery app ----------------------------------------------------------------------------------------------


def test_app_settings_follow_the_reliability_rules(settings: Settings) -> None:
    app = create_app(settings)
    conf = app.conf
    assert conf.accept_content == ["json"] and conf.result_accept_content == ["json"]
    assert conf.task_serializer == conf.result_serializer == conf.event_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit == 8 < conf.task_time_limit == 10
    assert conf.broker_transport_options["visibility_timeout"] == 15 == conf.visibility_timeout
    assert conf.broker_transport_options["unacked_restore_interval"] == 1
    assert conf.task_ignore_result and conf.result_backend is None
    assert conf.broker_connection_retry_on_startup is True
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is False
    assert conf.worker_max_tasks_per_child == 200
    assert [q.name for q in conf.task_queues] == list(QUEUES) == ["backtest", "paper", "data"]
    for name in (BATCH_TASK, FETCH_TASK, PAPER_TASK):  # inherited from the app's configuration
        task = app.tasks[name]
        assert task.acks_late and task.reject_on_worker_lost and task.ignore_result
    assert conf.task_routes[FETCH_TASK] == {"queue": "data"}


@pytest.mark.parametrize(
    ("soft", "hard", "vis", "message"),
    [(10, 10, 20, "BACKFARM_TASK_SOFT_TIME_LIMIT (10 s) must be below"), (5, 20, 20, "BACKFARM_TASK_TIME_LIMIT")],
)
def test_clocks_must_be_ordered(settings: Settings, soft: float, hard: float, vis: float, message: str) -> None:
    bad = replace(settings, task_soft_time_limit_s=soft, task_time_limit_s=hard, visibility_timeout_s=vis)
    with pytest.raises(ConfigError, match=re.escape(message)):
        create_app(bad)


def test_tls_urls_always_verify_the_server(settings: Settings) -> None:
    app = create_app(replace(settings, redis_url="rediss://:pw@redis.example:6380/0?ssl_ca_certs=/etc/ca.pem"))
    assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/ca.pem"}
    assert app.conf.broker_url == "rediss://:pw@redis.example:6380/0"
    with pytest.raises(ConfigError, match="must verify"):
        create_app(replace(settings, redis_url="rediss://redis.example:6380/0?ssl_cert_reqs=none"))
    with pytest.raises(ConfigError, match="no Redis configured"):
        create_app(Settings())


def test_batch_size_targets_work_per_task_and_spreads_small_sweeps(chaos: None) -> None:
    from backfarm.sweeps.expand import expand
    from backfarm.sweeps.spec import SweepSpec

    # 1,285 jobs of 1,440 bars: 4,000,000 // 1,440 = 2,777 by work, but 1,285 / 8 tasks = 161 to spread them
    day = expand(SweepSpec(grid=True, days=1, source="synthetic")).jobs
    assert farm.farm_batch_size(day) == -(-len(day) // farm.MIN_BATCHES) == 161
    # 3 windows x 1,285 jobs of 43,200 bars: 4,000,000 // 43,200 = 92 by work (3,855 / 8 = 482 would spread)
    big = expand(SweepSpec(grid=True, days=90, window="30d", source="synthetic")).jobs
    assert len(big) == 3855 and farm.farm_batch_size(big) == 92
    assert farm.farm_batch_size(chaos_expansion([{"every": 2}]).jobs) == farm.MIN_BATCH


# --- the batch task's guards ---------------------------------------------------------------------------------------


def _sweep(store: RedisStore, settings: Settings, params: list[dict[str, int]]) -> tuple[str, Batch]:
    expansion = chaos_expansion(params)
    prepare_data(expansion, settings)
    assert store.create_sweep(sweep_record(expansion))
    return expansion.sweep_id, Batch(expansion.jobs)


def test_done_guard_makes_a_redelivered_batch_a_no_op(ctx: Any, store: RedisStore, chaos: None) -> None:
    sweep_id, batch = _sweep(store, ctx.settings, [{"every": n} for n in (2, 3, 4)])
    first = process_batch(ctx, sweep_id, batch)
    assert (first.mode, first.computed, first.skipped) == ("bulk", 3, 0)
    stored = {job.job_id: store.get(job.job_id) for job in batch.jobs}
    again = process_batch(ctx, sweep_id, batch)
    assert (again.computed, again.skipped) == (0, 3)
    assert ctx.ledger.attempts(sweep_id) == {
        job.job_id: 1 for job in batch.jobs
    }  # the skip did not count as an attempt
    assert {job.job_id: store.get(job.job_id) for job in batch.jobs} == stored
    assert store.sweep(sweep_id).complete  # type: ignore[union-attr]


def test_a_waiting_client_wakes_when_a_worker_reports_a_batch(ctx: Any, store: RedisStore, chaos: None) -> None:
    """The wait loop sleeps on the sweep's progress channel: a batch's message ends the sleep long before the poll
    interval (30 s here), and names the worker that ran it."""
    sweep_id, batch = _sweep(store, ctx.settings, [{"every": n} for n in (2, 3)])
    results: list[watch.Progress] = []
    looked = threading.Event()  # set once the waiter has subscribed and seen the sweep unfinished

    def waiting() -> None:
        with FarmClient(ctx.settings, store) as waiter:
            results.append(waiter.wait(sweep_id, on_update=lambda _: looked.set(), poll_s=30.0, timeout_s=60.0))

    waiter = threading.Thread(target=waiting)
    waiter.start()
    # Publishing before that would race: a waiter that first looks after the commit ends at once, message unread.
    assert looked.wait(20), "the waiter never reported progress"
    channel = FarmKeys(store.keys.prefix).progress_channel(sweep_id)
    wait_for(lambda: store.conn.client.pubsub_numsub(channel)[0][1] >= 1, 20, "the server to register the subscription")
    report = process_batch(ctx, sweep_id, batch)
    announce(ctx, sweep_id, report, "w1@farm-host")
    waiter.join(timeout=20.0)
    assert not waiter.is_alive(), "the wait slept out its poll interval instead of waking on the message"
    assert results[0].complete and results[0].done == 2
    assert "w1@farm-host" in (results[0].workers or [])


def test_a_batch_without_curves_stores_lean_results_bulk_and_careful(ctx: Any, store: RedisStore, chaos: None) -> None:
    sweep_id, batch = _sweep(store, ctx.settings, [{"every": n} for n in (2, 3, 4)])
    lean = Batch.from_dict({**batch.to_dict(), "curves": False})
    first, rest = Batch(lean.jobs[:1], curves=False), Batch(lean.jobs[1:], curves=False)
    assert process_batch(ctx, sweep_id, first).mode == "bulk"
    ctx.ledger.attempt_many(sweep_id, [j.job_id for j in rest.jobs])  # as if a delivery had died: the careful path
    assert process_batch(ctx, sweep_id, rest).mode == "careful"
    stored = [store.get(job.job_id) for job in batch.jobs]
    assert all(r is not None and set(r.extra) == {"daily"} and r.metrics["trades"] is not None for r in stored)


def test_nothing_is_announced_for_a_batch_that_changed_nothing(ctx: Any, store: RedisStore, chaos: None) -> None:
    sweep_id, batch = _sweep(store, ctx.settings, [{"every": 2}])
    process_batch(ctx, sweep_id, batch)
    pubsub = store.conn.client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(FarmKeys(store.keys.prefix).progress_channel(sweep_id))
    pubsub.get_message(timeout=1.0)  # the subscription's confirmation
    announce(ctx, sweep_id, process_batch(ctx, sweep_id, batch), "w2@farm-host")  # all done already: skipped
    announce(ctx, sweep_id, farm_report(computed=1), "w3@farm-host")
    message = pubsub.get_message(timeout=5.0)
    pubsub.close()
    assert message is not None and json.loads(message["data"]) == {"worker": "w3@farm-host", "jobs": 1}


def test_a_raising_job_is_retried_alone_then_dead_with_its_error(ctx: Any, store: RedisStore, chaos: None) -> None:
    sweep_id, batch = _sweep(store, ctx.settings, [{"every": 2}, {"every": 2, "mode": RAISE}, {"every": 3}])
    bad = batch.jobs[1].job_id
    report = process_batch(ctx, sweep_id, batch)
    assert report.computed == 2 and [j.job_id for j in report.retry] == [bad]
    for attempt in (2, 3):
        report = process_batch(ctx, sweep_id, Batch(tuple(report.retry)))
        assert report.mode == "careful"
        assert ctx.ledger.attempts(sweep_id)[bad] == attempt
    assert report.retry == [] and report.dead == 1
    assert store.dead(sweep_id) == {bad: "failed 3 times: RuntimeError: chaos strategy failed on purpose"}
    info = store.sweep(sweep_id)
    assert info is not None and (info.done, info.dead, info.complete) == (2, 1, True)


def test_an_interrupted_batch_reruns_one_job_at_a_time(ctx: Any, store: RedisStore, chaos: None) -> None:
    sweep_id, batch = _sweep(store, ctx.settings, [{"every": n} for n in (2, 3, 4, 5)])
    keys = FarmKeys(store.keys.prefix)
    # A first delivery counted every job, then its process died before the commit.
    for job in batch.jobs:
        store.conn.client.hincrby(keys.attempts(sweep_id), job.job_id, 1)
    store.conn.client.hset(keys.attempts(sweep_id), batch.jobs[2].job_id, 3)  # this one has used up its attempts
    report = process_batch(ctx, sweep_id, batch)
    assert (report.mode, report.computed, report.dead) == ("careful", 3, 1)
    attempts = ctx.ledger.attempts(sweep_id)
    assert [attempts[j.job_id] for j in batch.jobs] == [2, 2, 4, 2]
    (reason,) = store.dead(sweep_id).values()
    assert reason.startswith("gave up after 3 attempts: the worker process died, was killed or hit the time limit")


def test_a_cancelled_sweep_runs_nothing(ctx: Any, store: RedisStore, client: FarmClient, chaos: None) -> None:
    sweep_id, batch = _sweep(store, ctx.settings, [{"every": 2}, {"every": 3}])
    assert client.cancel(sweep_id) == 2
    report = process_batch(ctx, sweep_id, batch)
    assert report.cancelled and report.computed == 0
    p = client.progress(sweep_id)
    assert p.cancelled and p.complete and p.dead == 2
    assert all(r.startswith("cancelled at ") for r in store.dead(sweep_id).values())


def test_a_complete_sweep_is_not_relabelled_cancelled(
    ctx: Any, store: RedisStore, client: FarmClient, chaos: None, farm_env: dict[str, str]
) -> None:
    sweep_id, batch = _sweep(store, ctx.settings, [{"every": 2}, {"every": 3}])
    assert process_batch(ctx, sweep_id, batch).computed == 2
    assert client.cancel(sweep_id) is None
    result = CliRunner().invoke(cli_app, ["sweep", "cancel", sweep_id[:8]], env=farm_env)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"sweep {sweep_id} is already complete (2 done, 0 dead): nothing to cancel"
    p = client.progress(sweep_id)
    assert p.complete and not p.cancelled and (p.done, p.dead) == (2, 0)


def test_a_tampered_message_is_dropped_without_running(settings: Settings, store: RedisStore, chaos: None) -> None:
    app = create_app(settings)
    sweep_id, batch = _sweep(store, settings, [{"every": 2}])
    data = batch.to_dict()
    data["jobs"][0]["params"]["mode"] = CRASH  # the content no longer hashes to its job id: never run it
    assert app.tasks[BATCH_TASK](sweep_id, data) == {"malformed": True}
    assert app.tasks[BATCH_TASK](sweep_id, {"jobs": [{"strategy": "chaos"}]}) == {"malformed": True}
    assert FarmClient(settings, store, app).ledger.attempts(sweep_id) == {}


# --- client side: submit, double submit, reconcile, rebuild ------------------------------------------------------


def test_submit_enqueues_once_even_when_two_submit_at_once(settings: Settings, redis_url: str, chaos: None) -> None:
    params = [{"every": n} for n in range(2, 12)]
    expansion = chaos_expansion(params, symbols=("BTC-USD", "ETH-USD"))
    batches = make_batches(expansion.jobs, farm.farm_batch_size(expansion.jobs))
    ids: list[str] = []

    def go() -> None:
        with RedisStore(redis_url) as s:
            ids.append(submit(settings, s, chaos_spec(params, symbols=("BTC-USD", "ETH-USD"))))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with RedisStore(redis_url) as store, FarmClient(settings, store) as client:
        assert ids == [expansion.sweep_id] * 2
        assert store.conn.client.llen("backtest") == len(batches) == 6  # 2 symbols x 10 jobs in batches of 4
        assert client.reconcile(expansion.sweep_id) == 20  # nothing done: everything again
        assert store.conn.client.llen("backtest") == 12
        info = store.sweep(expansion.sweep_id)
        assert info is not None
        assert rebuild_expansion(info).jobs == expansion.jobs


def _queued_batches(store: RedisStore) -> list[dict[str, Any]]:
    """The batches waiting in the backtest queue, as their messages carry them (kombu JSON, base64 body)."""
    out = []
    for raw in store.conn.client.lrange("backtest", 0, -1):
        message = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        out.append(args[1])
    return out


def test_a_lean_sweep_is_re_enqueued_lean(
    settings: Settings, store: RedisStore, client: FarmClient, chaos: None
) -> None:
    lean = submit(settings, store, chaos_spec([{"every": n} for n in (2, 3)]), curves=False)
    assert [b.get("curves") for b in _queued_batches(store)] == [False]
    info = store.sweep(lean)
    assert info is not None and info.spec["curves"] is False
    store.conn.client.delete("backtest")  # the broker lost the message
    assert client.reconcile(lean) == 2
    assert [b.get("curves") for b in _queued_batches(store)] == [False]  # still lean, as submitted
    full = submit(settings, store, chaos_spec([{"every": n} for n in (4, 5)]))
    store.conn.client.delete("backtest")
    assert client.reconcile(full) == 2
    info = store.sweep(full)
    assert info is not None and "curves" not in info.spec  # the default leaves the manifest as it always was
    assert [b.get("curves", True) for b in _queued_batches(store)] == [True]


def test_wait_reconciles_a_sweep_whose_messages_were_lost(
    settings: Settings, store: RedisStore, client: FarmClient, chaos: None
) -> None:
    sweep_id = submit(settings, store, chaos_spec([{"every": n} for n in (2, 3)]))
    store.conn.client.delete("backtest")  # the broker lost the message
    updates: list[watch.Progress] = []
    last = client.wait(sweep_id, on_update=updates.append, stall_s=0.3, timeout_s=1.5)
    assert last.reconciled == 2 and not last.complete
    assert store.conn.client.llen("backtest") == 1
    assert updates[0].total == 2 and updates[0].pending == 2


def _scripted_pings(monkeypatch: pytest.MonkeyPatch, answers: list[list[str]]) -> None:
    """Workers answer the wait's pings as ``answers`` says, in a loop, one answer every 50 ms."""
    replies = itertools.cycle(answers)
    monkeypatch.setattr(farm, "live_workers", lambda app, timeout=0.0: next(replies))
    monkeypatch.setattr(watch, "PING_EVERY_S", 0.05)


def test_wait_reconciles_early_when_a_worker_misses_two_pings(
    settings: Settings, store: RedisStore, client: FarmClient, chaos: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that stops answering took its unacked batch with it: the wait re-enqueues after the short stall,
    not after the visibility timeout (``stall_s`` here: far beyond the test)."""
    _scripted_pings(monkeypatch, [["a", "b"], ["a", "b"], *[["a"]] * 1000])
    sweep_id = submit(settings, store, chaos_spec([{"every": n} for n in (2, 3)]))
    store.conn.client.delete("backtest")  # the batch "b" had taken, gone with it
    last = client.wait(sweep_id, stall_s=10**6, timeout_s=5.0, lost_stall_s=0.3)
    assert last.reconciled == 2 and store.conn.client.llen("backtest") == 1


def test_one_missed_ping_at_a_time_is_not_a_lost_worker(
    settings: Settings, store: RedisStore, client: FarmClient, chaos: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A late reply on a busy machine looks like a missed ping: alone, it must not trigger a reconcile."""
    _scripted_pings(monkeypatch, [["a", "b"], ["a"]])
    sweep_id = submit(settings, store, chaos_spec([{"every": n} for n in (2, 3)]))
    store.conn.client.delete("backtest")
    # Bounded wait for something that must not happen: about 30 answers, every other one without "b".
    last = client.wait(sweep_id, stall_s=10**6, timeout_s=1.5, lost_stall_s=0.3)
    assert last.reconciled == 0 and store.conn.client.llen("backtest") == 0


def test_resubmitting_a_sweep_whose_messages_are_gone_re_enqueues_it(
    settings: Settings, store: RedisStore, chaos: None
) -> None:
    params = [{"every": n} for n in (2, 3, 4, 5, 6)]  # 5 jobs: 2 batches
    sweep_id = submit(settings, store, chaos_spec(params))
    store.conn.client.delete("backtest")  # the first submit's messages are lost
    submit(settings, store, chaos_spec(params))
    assert store.conn.client.llen("backtest") == 0  # recorded a moment ago: its submit may still be publishing
    store.conn.client.hset(store.keys.sweep(sweep_id), "created_at", repr(time.time() - 120))
    submit(settings, store, chaos_spec(params))
    assert store.conn.client.llen("backtest") == 2
    submit(settings, store, chaos_spec(params))
    assert store.conn.client.llen("backtest") == 2  # queued now: nothing more


def test_redis_checks_are_one_line_and_never_show_the_password(redis_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match=r"^cannot reach Redis at redis://127\.0\.0\.1:1"):
        check_redis("redis://127.0.0.1:1/0")
    assert time.monotonic() - started < 5
    wrong = redis_url.replace(redis_url.split(":")[2].split("@")[0], "not-the-password")
    with pytest.raises(AuthError) as info:
        check_redis(wrong)
    assert "rejected the credentials" in str(info.value) and "not-the-password" not in str(info.value)
    port = redis_url.rsplit(":", 1)[1]
    with pytest.raises(AuthError, match="requires a password"):
        check_redis(f"redis://127.0.0.1:{port}")


# --- cluster lock and rate limit ---------------------------------------------------------------------------------


def test_the_rate_limit_is_one_budget_for_every_worker(store: RedisStore) -> None:
    keys = FarmKeys(store.keys.prefix)
    a = RedisRateLimiter(store.conn, keys, {"public": 10.0})
    b = RedisRateLimiter(store.conn, keys, {"public": 10.0})  # another worker
    waits, slots = [], []
    for limiter in (a, b, a):
        waits.append(limiter.reserve("public"))
        slots.append(int(store.conn.client.get(keys.rate("public"))))
    # The booked slots are exactly 100 ms apart on Redis' clock, whichever worker booked them; each caller waits
    # for its own slot (less the time since the first call, which a loaded machine stretches).
    assert [s - slots[0] for s in slots] == [0, 100_000, 200_000]
    assert waits[0] == 0.0 and 0.0 < waits[1] <= 0.1 < waits[2] <= 0.2


def test_a_429_on_one_worker_slows_every_worker_down(store: RedisStore) -> None:
    keys = FarmKeys(store.keys.prefix)
    a = RedisRateLimiter(store.conn, keys, {"public": 10.0})
    b = RedisRateLimiter(store.conn, keys, {"public": 10.0})  # another worker
    assert a.slow_down("public", 5.0) == 2.0  # worker a saw a 429 (Retry-After 5 s)
    assert 0.0 < b.reserve("public") <= 5.0  # b waits it out too (less the time since, on a loaded machine)
    slots = [int(store.conn.client.get(keys.rate("public")))]
    a.reserve("public")
    slots.append(int(store.conn.client.get(keys.rate("public"))))
    # 5/s now, for both: 200 ms apart, a little less as the slowdown decays (it halves every 20 s)
    assert 150_000 <= slots[1] - slots[0] <= 200_000
    assert a.slow_down("public", 0.0) == pytest.approx(4.0, rel=0.01)
    for _ in range(10):
        b.slow_down("public", 0.0)
    assert float(store.conn.client.hget(keys.slowdown("public"), "factor")) == 32.0  # capped


def test_a_partition_is_fetched_by_one_worker_at_a_time(store: RedisStore) -> None:
    keys = FarmKeys(store.keys.prefix)
    seen: list[str] = []

    class Inner:
        name, can_fetch = "coinbase", True

        def fetch(self, symbol: str, granularity: str, start: datetime, end: datetime) -> dict[str, Any]:
            lock = source.lock_name(symbol, granularity, start)
            assert store.conn.client.exists(lock)
            assert not store.conn.client.lock(lock, timeout=5).acquire(blocking=False)  # nobody else gets it now
            seen.append(lock)
            return {}

    source = ClusterLockedSource(Inner(), store.conn, keys, lock_ttl_s=10)  # type: ignore[arg-type]
    source.fetch("BTC-USD", "1m", datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    source.fetch("BTC-USD", "1m", datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC))
    assert seen == [keys.lock("candles:coinbase:BTC-USD:1m:2026-10"), keys.lock("candles:coinbase:BTC-USD:1m:2026-09")]
    assert not any(store.conn.client.exists(lock) for lock in seen)  # released
