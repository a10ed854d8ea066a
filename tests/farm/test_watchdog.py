"""The workers' watchdog: a sweep that stands still with nothing queued or in flight is re-enqueued by the farm
itself, by one worker, and ``status`` says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfarm.cli import app as cli_app
from backfarm.farm.app import close_app, create_app
from backfarm.farm.client import FarmClient
from backfarm.farm.keys import BACKTEST_QUEUE
from backfarm.farm.watchdog import Watchdog, last_reconcile, stall_time
from backfarm.results.redis_store import RedisStore
from tests.farm.conftest import chaos_spec, submit
from tests.workers import Farm, wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def farm_client(farm: Farm) -> FarmClient:
    settings = farm.settings
    celery = create_app(settings)
    with RedisStore(settings.redis_url or "") as store, FarmClient(settings, store, celery) as client:
        yield client
    close_app(celery)


def test_only_a_sweep_standing_still_with_nothing_queued_is_reconciled_once(
    farm: Farm, farm_client: FarmClient, chaos: None
) -> None:
    settings, store = farm.settings, farm_client.store
    sweep = submit(settings, store, chaos_spec([{"every": n} for n in range(2, 12)]))  # no worker: all queued
    clock = Clock()
    one = Watchdog(settings, farm_client.app, "one@test", clock=clock)
    other = Watchdog(settings, farm_client.app, "other@test", clock=clock)
    stall = stall_time(settings)
    assert one.check(farm_client) == []
    clock.now += 10 * stall
    assert one.check(farm_client) == []  # standing still, but its batches wait in the queue: not lost
    queued = farm_client.ledger.queue_lengths()[BACKTEST_QUEUE]
    assert queued >= 1
    store.conn.client.delete(BACKTEST_QUEUE)  # the messages are lost (a Redis restart without persistence)
    assert one.check(farm_client) == [] and other.check(farm_client) == []  # idle from now on
    clock.now += stall - 1
    assert one.check(farm_client) == []  # not long enough
    clock.now += 2
    assert one.check(farm_client) == [(sweep, 10)]
    assert other.check(farm_client) == []  # one worker of the farm does it
    assert farm_client.ledger.queue_lengths()[BACKTEST_QUEUE] == queued  # every pending job back in the queue
    note = last_reconcile(store.conn, farm_client.ledger.keys, sweep)
    assert note is not None and (note["worker"], note["jobs"]) == ("one@test", 10) and note["stalled_s"] >= stall
    clock.now += 10 * stall
    assert one.check(farm_client) == []  # queued again: not stalled
    store.conn.client.delete(BACKTEST_QUEUE)
    farm_client.cancel(sweep)
    clock.now += 10 * stall
    assert one.check(farm_client) == [] and other.check(farm_client) == []  # complete once cancelled


def test_a_detached_sweep_whose_messages_were_lost_completes_by_itself(
    farm: Farm, farm_client: FarmClient, chaos: None, tmp_path: Path
) -> None:
    settings, store = farm.settings, farm_client.store
    sweep = submit(settings, store, chaos_spec([{"every": n} for n in range(2, 22)]))
    store.conn.client.delete(BACKTEST_QUEUE)  # lost before any worker saw them; no client waits for the sweep
    worker = farm.start("w1")
    farm.ready(worker)
    timeout = 3 * stall_time(settings) + 60
    wait_for(lambda: (info := store.sweep(sweep)) is not None and info.complete, timeout, "the sweep to complete")
    info = store.sweep(sweep)
    assert info is not None and (info.done, info.dead) == (20, 0)
    result = CliRunner().invoke(cli_app, ["status", sweep, "--format", "json"], env=farm.env)
    assert result.exit_code == 0, result.output
    note = json.loads(result.stdout)["reconciled"]
    assert note["worker"] == "w1@test" and note["jobs"] == 20
    result = CliRunner().invoke(cli_app, ["status", sweep], env=farm.env)
    assert "reconciled by the farm:" in result.stdout and "worker w1@test re-enqueued 20 jobs" in result.stdout
