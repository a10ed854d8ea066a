"""`backfarm backtest` with the default `coinbase` source: against the simulator, and with Coinbase unreachable."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfarm.cli import app
from backfarm.simulator import SimConfig, Simulator

runner = CliRunner()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig(public_rate=None)) as simulator:
        yield simulator


def _env(tmp_path: Path, api_url: str) -> dict[str, str]:
    return {
        "BACKFARM_DATA_DIR": str(tmp_path / "data"),
        "BACKFARM_REDIS_URL": "",
        "BACKFARM_COINBASE_API_URL": api_url,
        "COLUMNS": "200",
    }


def _board(env: dict[str, str]) -> dict[str, dict[str, object]]:
    result = runner.invoke(app, ["leaderboard", "--format", "json", "--top", "0"], env=env)
    assert result.exit_code == 0, result.stderr
    return {r["job_id"]: r["metrics"] for r in json.loads(result.stdout)}


def test_coinbase_is_the_default_source_and_cached_candles_give_the_same_metrics(
    tmp_path: Path, sim: Simulator
) -> None:
    env = _env(tmp_path, sim.api_url)
    args = [
        "backtest",
        "--days",
        "30",
        "--granularity",
        "1h",
        "--symbols",
        "BTC-USD,ETH-USD",
        "--strategies",
        "ma_crossover,momentum",
        "--params",
        "ma_crossover:fast=5,slow=20",
        "--params",
        "momentum:lookback=12",
    ]
    first = runner.invoke(app, args, env=env)
    assert first.exit_code == 0, first.stderr
    assert "source: coinbase" in first.stdout and "4 jobs (4 computed" in first.stdout
    fetched = len(sim.candle_requests())
    assert fetched > 0
    metrics = _board(env)
    # Same candles from the cache alone: drop the stored results, keep the candles, run again.
    shutil.rmtree(tmp_path / "data" / "results")
    sim.clear_log()
    cached = runner.invoke(app, args, env=env)
    assert cached.exit_code == 0, cached.stderr
    assert len(sim.candle_requests()) == 0  # every month came from the cache
    assert _board(env) == metrics


def test_unreachable_coinbase_says_so_and_suggests_synthetic(tmp_path: Path) -> None:
    env = _env(tmp_path, "http://127.0.0.1:9")
    result = runner.invoke(app, ["backtest", "--quick"], env=env)
    assert result.exit_code in (2, 3)
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "unreachable" in err and "--source synthetic" in err
    assert (
        not (tmp_path / "data" / "results").exists()
        or "no sweeps yet" in runner.invoke(app, ["sweeps"], env=env).stdout
    )
    shutil.rmtree(tmp_path / "data", ignore_errors=True)


def test_cached_candles_run_offline_and_say_so(tmp_path: Path, sim: Simulator) -> None:
    """With every candle of the window cached, a backtest runs with Coinbase unreachable: the symbol is checked
    against the cache, the stale open month is used as cached, and stderr says both."""
    args = ["backtest", "--days", "3", "--granularity", "1h", "--symbols", "BTC-USD,ETH-USD", "--strategies",
            "momentum"]  # fmt: skip
    online = runner.invoke(app, args, env=_env(tmp_path, sim.api_url))
    assert online.exit_code == 0, online.stderr
    metrics = _board(_env(tmp_path, sim.api_url))
    shutil.rmtree(tmp_path / "data" / "results")
    offline_env = {**_env(tmp_path, "http://127.0.0.1:9"), "BACKFARM_OPEN_MONTH_TTL": "0"}  # refetch the open month
    offline = runner.invoke(app, args, env=offline_env)
    assert offline.exit_code == 0, offline.stderr
    for symbol in ("BTC-USD", "ETH-USD"):
        assert f"{symbol} is checked against the candle cache only" in offline.stderr
        assert "coinbase is unreachable" in offline.stderr and f"using the cached {symbol} 1h" in offline.stderr
    assert "Traceback" not in offline.stderr
    assert _board(offline_env) == metrics  # the same candles, the same results
    unknown = runner.invoke(app, [*args[:-4], "--symbols", "DOGE-USD", "--strategies", "momentum"], env=offline_env)
    assert unknown.exit_code == 3 and "unreachable" in unknown.stderr  # nothing cached for it: no guessing
