"""``backfarm paper`` end to end on the embedded path: bad input, a replay that equals ``backfarm backtest``, the
report's reconciliation, status and stop, and a detached local session stopped gracefully."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfarm.cli import app
from backfarm.config import Settings
from backfarm.core.results import Filters
from backfarm.paper.store.sqlite import SQLiteSessionStore
from backfarm.results.factory import open_store
from backfarm.simulator import SimConfig, Simulator
from tests.workers import wait_for

runner = CliRunner()
FIVE = "momentum,mean_reversion,breakout,ma_crossover,volatility"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A private data directory and no Redis: the embedded path."""
    return {"BACKFARM_DATA_DIR": str(tmp_path / "data"), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig(public_rate=None)) as simulator:
        yield simulator


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


REPLAY = ["--feed", "replay", "--source", "synthetic", "--from", "2024-04-02"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "momentun", "--duration", "60s"], "error: unknown strategy 'momentun' (did you mean"),
        (["--duration", "0s"], "error: --duration must be positive, got '0s'"),
        (["--duration", "-300s"], "error: --duration needs a unit, like 120s, 30m, 4h, 7d or 2w (got '-300s')"),
        (["--duration", "120"], "error: --duration needs a unit, like 120s, 30m, 4h, 7d or 2w (got '120')"),
        ([*REPLAY, "--duration", "1h", "--speed", "0"], "error: --speed must be positive (or 'max'), got '0'"),
        ([*REPLAY, "--duration", "1h", "--speed", "-10"], "error: --speed must be positive (or 'max'), got '-10'"),
        ([*REPLAY, "--duration", "1h", "--symbols", "btc_usd"], "error: invalid symbol 'btc_usd' for the synthetic"),
        (["--duration", "60s", "--symbols", "BTC-USD,ETH-USDX"], "error: unknown product 'ETH-USDX' (did you mean"),
        (["--duration", "60s", "--speed", "10"], "error: --speed applies to --feed replay"),
        (["--duration", "60s", "--feed", "kraken"], "error: unknown feed 'kraken'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_stored(
    env: dict[str, str], sim: Simulator, args: list[str], message: str
) -> None:
    env = {**env, "BACKFARM_COINBASE_API_URL": sim.api_url, "BACKFARM_COINBASE_WS_URL": sim.ws_url}
    code, out, err = invoke(env, "paper", "start", *args)
    assert code == 2, (out, err)
    assert err.startswith(message) and err.count("\n") == 1, err
    code, out, _ = invoke(env, "paper", "status")
    assert code == 0 and "no paper sessions yet" in out


def test_replay_at_max_speed_equals_backtest_of_the_same_window(env: dict[str, str]) -> None:
    code, out, err = invoke(
        env, "paper", "start", *REPLAY, "--strategies", FIVE, "--symbols", "BTC-USD,ETH-USD", "--duration", "1d",
        "--speed", "max", "--wait",
    )  # fmt: skip
    assert code == 0, err
    session = out.splitlines()[0].strip()
    assert session.startswith("p") and "finished" in out and "bar 1,440/1,440" in out
    code, _, err = invoke(
        env, "backtest", "--source", "synthetic", "--strategies", FIVE, "--symbols", "BTC-USD,ETH-USD",
        "--start", "2024-04-02", "--end", "2024-04-03",
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = invoke(env, "leaderboard", "--all", "--format", "json", "--top", "0")
    rows = json.loads(out)
    by_kind: dict[str, dict[tuple[str, str], dict]] = {"paper": {}, "backtest": {}}
    for row in rows:
        by_kind[row["kind"]][(row["strategy"], row["symbol"])] = row
    assert len(by_kind["paper"]) == len(by_kind["backtest"]) == 10
    for key, paper in by_kind["paper"].items():
        backtest = by_kind["backtest"][key]
        assert paper["metrics"]["trades"] == backtest["metrics"]["trades"], key
        assert paper["metrics"] == backtest["metrics"], key
    with open_store(Settings.from_env(env)) as store:
        assert {r.extra["session"] for r in store.iter_results(Filters(kind="paper"))} == {session}
    code, out, _ = invoke(env, "leaderboard", "--all", "--kind", "paper", "--format", "json", "--top", "0")
    assert {r["kind"] for r in json.loads(out)} == {"paper"}

    code, out, err = invoke(env, "paper", "report", session[:6], "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    recon = report["reconciliation"]["accounts"]
    assert len(recon) == 10 and all(r["identical"] for r in recon.values())
    assert all(r["trades"]["paper"] == r["trades"]["backtest"] for r in recon.values())
    assert all(len(a["curve"]) > 10 for a in report["accounts"])
    code, out, _ = invoke(env, "paper", "report", session)
    assert code == 0 and "identical" in out and "accounts: paper vs backtest" in out
    code, out, _ = invoke(env, "paper", "status")
    assert code == 0 and session in out and "finished" in out
    code, out, _ = invoke(env, "paper", "status", session, "--format", "json")
    assert json.loads(out)["status"] == "finished" and len(json.loads(out)["accounts"]) == 10
    code, out, _ = invoke(env, "paper", "stop", session)
    assert code == 0 and "already finished" in out
    code, _, err = invoke(env, "paper", "report", "nosuch")
    assert code == 2 and err.startswith("error: no paper session 'nosuch'")


def test_detached_local_session_stops_gracefully_with_final_metrics(env: dict[str, str], tmp_path: Path) -> None:
    code, out, err = invoke(
        env, "paper", "start", *REPLAY, "--strategies", "momentum,breakout", "--symbols", "BTC-USD",
        "--duration", "2h", "--speed", "300", "--params", "momentum:lookback=5", "--params", "breakout:entry=10,exit=5",
    )  # fmt: skip
    assert code == 0, err
    session = out.strip()
    assert "follow it with `backfarm paper status" in err
    store = SQLiteSessionStore(tmp_path / "data" / "paper.sqlite")

    def bars() -> int:
        info = store.get(session)
        return min(info.cursor["bars_done"].values()) if info and info.cursor else 0

    log = tmp_path / "data" / "paper" / f"{session}.log"
    wait_for(lambda: bars() >= 5, 60, f"the detached session to run ({log})", every=0.1)
    code, out, _ = invoke(env, "paper", "stop", session)
    assert code == 0 and "stop requested" in out
    wait_for(lambda: store.get(session).status == "stopped", 30, "the session to stop", every=0.1)
    info = store.get(session)
    assert 5 <= bars() < 120
    assert set(info.final) == {"momentum@BTC-USD", "breakout@BTC-USD"}
    assert all(m is not None and m["trades"] >= 0 for m in info.final.values())
    assert info.accounts == {} or all(v[1] == 0.0 for v in info.accounts.values())  # flat: closed out at the end
    # The runner writes its final status to the store before it prints its summary line and exits.
    wait_for(lambda: f"paper session {session} stopped" in log.read_text(), 30, "the stop line in the log", every=0.1)
    store.close()
