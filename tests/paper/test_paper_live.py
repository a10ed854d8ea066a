"""Live sessions against the Coinbase simulator: 3 strategies × 3 symbols for their whole duration, results on the
leaderboard, fills at the quotes' bid and ask within the products' increments; and a WebSocket that drops mid-way
reconnects without duplicating or losing a bar.

The simulator runs 60× faster than the wall clock (one 1-minute bar per second) from two days ago, so its candles
exist for the warm-up and the session's clock is the feed's, not the wall's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfarm.cli import app
from backfarm.config import Settings
from backfarm.core.results import Filters
from backfarm.paper.report import build_report
from backfarm.paper.session import run_session
from backfarm.paper.spec import build_spec
from backfarm.paper.store.base import SESSION_FILE
from backfarm.paper.store.sqlite import SQLiteSessionStore
from backfarm.results.embedded import EmbeddedStore
from backfarm.simulator import Faults, SimConfig, Simulator
from tests.paper.conftest import FAST_PARAMS, DyingStore
from tests.workers import wait_for

SPEED = 60.0
STEP_NS = 60 * 10**9
INCREMENTS = {"BTC-USD": "0.00000001", "ETH-USD": "0.00000001", "SOL-USD": "0.001"}


def _simulator(faults: Faults | None = None) -> Simulator:
    config = SimConfig(speed=SPEED, start_time=time.time() - 2 * 86400, tick_interval=0.05, public_rate=None)
    return Simulator(config, faults)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with _simulator() as simulator:
        yield simulator


def _settings(sim: Simulator, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", coinbase_api_url=sim.api_url, coinbase_ws_url=sim.ws_url)


def _bars_by_symbol(store: SQLiteSessionStore, session_id: str) -> dict[str, list[int]]:
    checkpoint = store.checkpoint(session_id)
    assert checkpoint is not None
    out: dict[str, list[int]] = {}
    for bar in checkpoint.bars:
        out.setdefault(bar["symbol"], []).append(int(bar["ts"]))
    return out


def test_live_session_on_the_simulator_runs_its_duration_and_lands_on_the_leaderboard(
    sim: Simulator, tmp_path: Path
) -> None:
    settings = _settings(sim, tmp_path)
    symbols = ["BTC-USD", "ETH-USD", "SOL-USD"]
    spec = build_spec(["momentum", "mean_reversion", "breakout"], symbols, 360, params=FAST_PARAMS)
    assert spec.warmup is None and spec.warmup_bars() == 11  # warmed up from candles: acts on the first bar
    store = SQLiteSessionStore(tmp_path / "paper.sqlite")
    store.create(spec)
    results = EmbeddedStore(tmp_path / "results")
    started = time.monotonic()
    outcome = run_session(store, spec.session_id, settings, results=results)
    wall = time.monotonic() - started
    assert outcome.status == "finished" and outcome.bars == 6
    assert 360 / SPEED - 1.5 < wall < 360 / SPEED + 15  # ran for its duration, in feed time

    bars = _bars_by_symbol(store, spec.session_id)
    for symbol in symbols:
        first = bars[symbol][0]
        assert bars[symbol] == [first + i * STEP_NS for i in range(6)], symbol
    fills = store.fills(spec.session_id)
    assert fills, "the short windows trade within six bars"
    for fill in fills:
        quoted = fill.ask if fill.side == "buy" else fill.bid
        assert fill.price == quoted, fill  # no slippage configured: exactly the quote
        units = Decimal(repr(fill.qty)) / Decimal(INCREMENTS[fill.account.split("@")[1]])
        assert units == units.to_integral_value(), fill
    assert len(store.equity(spec.session_id)) == 6 * len(symbols)

    assert not any("order" in r.path for r in sim.requests)  # paper: nothing is ever sent to the exchange
    records = list(results.iter_results(Filters(kind="paper")))
    assert len(records) == 9
    assert {r.extra["session"] for r in records} == {spec.session_id}
    assert {r.source for r in records} == {"coinbase-live"}
    assert {r.strategy for r in records} == {"momentum", "mean_reversion", "breakout"}
    info = store.get(spec.session_id)
    assert info.status == "finished" and set(info.final) == {a.key for a in spec.accounts()}

    report = build_report(store, spec.session_id, settings)
    reconciled = report["reconciliation"]["accounts"]
    assert set(reconciled) == {a.key for a in spec.accounts()}
    for key, account in reconciled.items():
        for row in account["rows"]:
            assert row["attribution"], key
            if row["paper"] and row["backtest"] and row["attribution"] != ["identical"]:
                assert any(a.startswith(("fill price", "signal", "missed")) for a in row["attribution"]), row


def test_the_report_of_a_one_bar_session_says_why_nothing_is_reconciled(sim: Simulator, tmp_path: Path) -> None:
    settings = _settings(sim, tmp_path)
    params = {name: FAST_PARAMS[name] for name in ("momentum", "breakout")}
    spec = build_spec(["momentum", "breakout"], ["BTC-USD"], 60, params=params)  # one 1-minute bar
    settings.data_dir.mkdir(parents=True)
    store = SQLiteSessionStore(settings.data_dir / SESSION_FILE)  # where `backfarm paper report` looks
    store.create(spec)
    outcome = run_session(store, spec.session_id, settings)
    assert outcome.status == "finished" and outcome.bars == 1
    report = build_report(store, spec.session_id, settings)  # used to fail: "a backtest needs at least 2 bars"
    assert [a["account"] for a in report["accounts"]] == ["momentum@BTC-USD", "breakout@BTC-USD"]
    why = "the session ran 1 bar of BTC-USD: a backtest needs at least 2"
    assert report["reconciliation"]["accounts"] == {
        key: {"error": why} for key in ("momentum@BTC-USD", "breakout@BTC-USD")
    }
    env = {"BACKFARM_DATA_DIR": str(settings.data_dir), "BACKFARM_REDIS_URL": "", "COLUMNS": "200",
           "BACKFARM_COINBASE_API_URL": sim.api_url, "BACKFARM_COINBASE_WS_URL": sim.ws_url}  # fmt: skip
    shown = CliRunner().invoke(app, ["paper", "report", spec.session_id], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"not reconciled (momentum@BTC-USD, breakout@BTC-USD): {why}" in shown.stdout


def test_a_dropped_feed_reconnects_without_duplicated_bars(tmp_path: Path) -> None:
    faults = Faults(ws_drop_after=60, ws_connections=1)  # the first connection drops after ~1 s of ticks
    with _simulator(faults) as simulator:
        settings = _settings(simulator, tmp_path)
        spec = build_spec(["momentum"], ["BTC-USD", "ETH-USD"], 240, params={"momentum": FAST_PARAMS["momentum"]})
        store = SQLiteSessionStore(tmp_path / "paper.sqlite")
        store.create(spec)
        outcome = run_session(store, spec.session_id, settings, results=EmbeddedStore(tmp_path / "r"))
        assert simulator.ws_connections >= 2
    assert outcome.status == "finished"
    cursor = store.checkpoint(spec.session_id).cursor
    assert cursor["feed"]["connects"] >= 2 and cursor["feed"]["disconnects"] >= 1
    for symbol, stamps in _bars_by_symbol(store, spec.session_id).items():
        assert stamps == [stamps[0] + i * STEP_NS for i in range(4)], symbol


class _Killed(BaseException):
    """A runner dying between two commits (not an Exception: nothing may handle it)."""


def test_a_live_session_resumes_from_its_checkpoint_and_ends_on_time(sim: Simulator, tmp_path: Path) -> None:
    settings = _settings(sim, tmp_path)
    spec = build_spec(["momentum"], ["BTC-USD"], 480, params={"momentum": FAST_PARAMS["momentum"]})
    store = DyingStore(tmp_path / "paper.sqlite", die_at=4, error=_Killed)
    store.create(spec)
    results = EmbeddedStore(tmp_path / "r")
    with pytest.raises(_Killed):
        run_session(store, spec.session_id, settings, results=results)
    before = store.checkpoint(spec.session_id).cursor
    assert 1 <= before["bars_done"]["BTC-USD"] < 8
    store.die_at = 0
    outcome = run_session(store, spec.session_id, settings, results=results)
    assert outcome.resumed and outcome.status == "finished" and outcome.bars == 8
    stamps = _bars_by_symbol(store, spec.session_id)["BTC-USD"]
    assert stamps == [before["start_ns"] + i * STEP_NS for i in range(8)]
    ids = [f.fill_id for f in store.fills(spec.session_id)]
    assert len(ids) == len(set(ids))
    assert len(store.equity(spec.session_id)) == 8
    assert len(list(results.iter_results(Filters(kind="paper")))) == 1


def test_stopping_a_live_session_ends_it_at_the_current_bar(sim: Simulator, tmp_path: Path) -> None:
    settings = _settings(sim, tmp_path)
    params = {k: FAST_PARAMS[k] for k in ("momentum", "breakout")}
    spec = build_spec(["momentum", "breakout"], ["ETH-USD"], 1200, params=params)
    store = SQLiteSessionStore(tmp_path / "paper.sqlite")
    store.create(spec)

    def stop_after_two_bars() -> None:
        def bars() -> int:
            checkpoint = store.checkpoint(spec.session_id)
            return checkpoint.cursor["bars_done"]["ETH-USD"] if checkpoint else 0

        wait_for(lambda: bars() >= 2, 30, "two live bars")
        store.request_stop(spec.session_id)

    stopper = threading.Thread(target=stop_after_two_bars)
    stopper.start()
    outcome = run_session(store, spec.session_id, settings, results=EmbeddedStore(tmp_path / "r"))
    stopper.join()
    assert outcome.status == "stopped" and 2 <= outcome.bars < 20
    info = store.get(spec.session_id)
    assert info.status == "stopped" and set(info.final) == {"momentum@ETH-USD", "breakout@ETH-USD"}
    assert all(state[1] == 0.0 for state in info.accounts.values())  # every position closed out
    assert len(store.equity(spec.session_id)) == outcome.bars
