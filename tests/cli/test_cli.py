"""The CLI end to end on the embedded path: backtest, reuse, leaderboard, results, sweeps, data, strategies, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from backfarm.cli import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A private data directory and no Redis: the embedded path."""
    return {"BACKFARM_DATA_DIR": str(tmp_path / "data"), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_default_backtest_runs_the_seed_screen_then_reuses_it(env: dict[str, str]) -> None:
    code, out, err = invoke(env, "backtest", "--days", "3", "--source", "synthetic")
    assert code == 0, err
    assert "25 jobs (25 computed, 0 reused)" in out
    assert "synthetic (generated candles, not market data)" in out
    assert "per strategy" in out and "top 10 by sharpe" in out
    for name in ("momentum", "mean_reversion", "breakout", "ma_crossover", "volatility"):
        assert name in out
    code, out, _ = invoke(env, "backtest", "--days", "3", "--source", "synthetic")
    assert code == 0
    assert "25 jobs (0 computed, 25 reused)" in out
    code, out, _ = invoke(env, "sweeps")
    assert code == 0 and "complete" in out


def test_grid_sweep_leaderboard_json_and_results_file(env: dict[str, str], tmp_path: Path) -> None:
    code, out, err = invoke(
        env, "backtest", "--grid", "--days", "2", "--workers", "2", "--top", "3", "--source", "synthetic"
    )
    assert code == 0, err
    total = int(out.split(" jobs (")[0].split("·")[-1].replace(",", "").strip())
    assert total >= 1000
    code, out, _ = invoke(env, "leaderboard", "--format", "json", "--top", "0")
    rows = json.loads(out)
    assert len(rows) == total
    assert len({r["job_id"] for r in rows}) == total
    sharpes = [r["metrics"]["sharpe"] for r in rows if r["metrics"]["sharpe"] is not None]
    assert sharpes == sorted(sharpes, reverse=True)
    code, out, _ = invoke(env, "leaderboard", "--by", "symbol", "--format", "json")
    assert {r["key"] for r in json.loads(out)} == {"BTC-USD", "ETH-USD", "SOL-USD", "LINK-USD", "POL-USD"}
    from backfarm.config import Settings
    from backfarm.results.factory import open_store

    with open_store(Settings.from_env(env)) as store:
        latest = store.sweeps()[0].sweep_id
    target = tmp_path / "results.parquet"
    code, _, err = invoke(env, "results", latest[:8], "--out", str(target))
    assert code == 0, err
    frame = pd.read_parquet(target)
    assert len(frame) == total
    assert {"sharpe", "total_return", "lookback", "fast", "slow"} <= set(frame.columns)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "momentumm"], "error: unknown strategy 'momentumm' (did you mean 'momentum'?)"),
        (["--params", "ma_crossover:fast=50,slow=10", "--strategies", "ma_crossover"], "fast < slow"),
        (["--days", "0"], "--days must be a number of days from 1 to 36,500, got 0"),
        (["--days", "99999999"], "--days must be a number of days from 1 to 36,500, got 99,999,999"),
        (["--capital", "nan"], "--capital must be a positive finite number, got nan"),
        (["--capital", "inf"], "--capital must be a positive finite number, got inf"),
        (["--granularity", "7m"], "unknown granularity '7m'"),
        (["--window", "40d", "--days", "30"], "--window 40d is longer than the period"),
        (["--symbols", "btc usd"], "BTC-USD"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_stored(env: dict[str, str], args: list[str], message: str) -> None:
    code, out, err = invoke(env, "backtest", "--source", "synthetic", *args)
    assert code == 2
    assert message in err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    code, out, _ = invoke(env, "sweeps")
    assert "no sweeps yet" in out


def test_truncated_cache_file_is_moved_aside_and_regenerated(env: dict[str, str]) -> None:
    code, _, err = invoke(env, "backtest", "--quick", "--days", "2", "--source", "synthetic")
    assert code == 0, err
    files = sorted((Path(env["BACKFARM_DATA_DIR"]) / "candles").rglob("*.parquet"))
    assert files
    victim = files[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    code, out, err = invoke(env, "backtest", "--quick", "--days", "2", "--fee-bps", "10", "--source", "synthetic")
    assert code == 0, err
    assert list(victim.parent.glob(victim.name + ".corrupt-*"))
    assert f"warning: corrupt candle cache file {victim}" in err
    assert err.count("corrupt candle cache") == 1  # logged once, not also as a Python warning
    assert "computed" in out


def test_leaderboard_errors_and_empty_store(env: dict[str, str]) -> None:
    code, out, _ = invoke(env, "leaderboard")
    assert code == 0 and "no results yet" in out
    code, _, err = invoke(env, "leaderboard", "--metric", "sharp")
    assert code == 2 and "did you mean 'sharpe'" in err
    code, _, err = invoke(env, "leaderboard", "--sweep", "nope")
    assert code == 2 and "unknown sweep 'nope'" in err
    code, _, err = invoke(env, "leaderboard", "--where", "colour=red")
    assert code == 2 and "unknown --where field 'colour'" in err


def test_strategies_list_and_check(env: dict[str, str]) -> None:
    code, out, _ = invoke(env, "strategies", "list")
    assert code == 0
    for name in ("momentum", "mean_reversion", "breakout", "ma_crossover", "volatility"):
        assert name in out
    code, out, err = invoke(env, "strategies", "check", "momentum", "ma_crossover", "--days", "2", "--cuts", "5")
    assert code == 0, err + out
    assert out.count("ok") >= 2
    code, _, err = invoke(env, "strategies", "check", "momentumm")
    assert code == 2 and "did you mean 'momentum'" in err


def test_data_import_ls_and_backtest_on_file_source(env: dict[str, str], tmp_path: Path) -> None:
    ts = pd.date_range("2026-09-01", periods=24 * 20, freq="1h", tz="UTC")
    price = 100 + (pd.Series(range(len(ts))) % 50).to_numpy() * 0.5
    frame = pd.DataFrame(
        {"timestamp": ts, "open": price, "high": price + 1, "low": price - 1, "close": price + 0.25, "volume": 5.0}
    )
    path = tmp_path / "candles.csv"
    frame.to_csv(path, index=False)
    code, out, err = invoke(env, "data", "import", str(path), "--symbol", "TEST-USD", "--granularity", "1h")
    assert code == 0, err
    assert "480" in out
    code, out, _ = invoke(env, "data", "ls")
    assert "TEST-USD" in out and "file" in out
    code, out, err = invoke(
        env, "backtest", "--source", "file", "--symbols", "TEST-USD", "--granularity", "1h",
        "--start", "2026-09-01", "--end", "2026-09-15", "--strategies", "ma_crossover,momentum",
        "--params", "ma_crossover:fast=5,slow=20", "--params", "momentum:lookback=12",
    )  # fmt: skip
    assert code == 0, err
    assert "2 jobs (2 computed" in out and "source: file" in out
    code, _, err = invoke(
        env, "backtest", "--source", "file", "--symbols", "TEST-USD", "--granularity", "1h",
        "--start", "2026-06-01", "--end", "2026-06-10",
    )  # fmt: skip
    assert code == 2 and "2026-09-01" in err  # says what is available


def test_real_entry_point_prints_one_line_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "BACKFARM_DATA_DIR": str(tmp_path), "BACKFARM_REDIS_URL": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "backfarm", "backtest", "--strategies", "momentumm"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == "error: unknown strategy 'momentumm' (did you mean 'momentum'?)\n"


def test_global_options_also_work_after_the_command(env: dict[str, str], tmp_path: Path) -> None:
    from backfarm.cli import hoist_global_options

    assert hoist_global_options(["backtest", "--redis", "redis://h:1", "--quick"]) == [
        "--redis", "redis://h:1", "backtest", "--quick",
    ]  # fmt: skip
    assert hoist_global_options(["sweeps", "--data-dir=/x", "--", "--redis"]) == [
        "--data-dir=/x",
        "sweeps",
        "--",
        "--redis",
    ]
    other = tmp_path / "elsewhere"
    code, _, err = invoke(env, "backtest", "--source", "synthetic", "--quick", "--days", "1", "--data-dir", str(other))
    assert code == 0, err
    assert (other / "results" / "index.sqlite").exists()
    code, _, err = invoke(env, "backtest", "--redis", "redis://127.0.0.1:1", "--source", "synthetic", "--quick")
    assert code == 3 and err.startswith("error: cannot reach Redis at redis://127.0.0.1:1")  # temporary: exit 3


def test_no_curves_stores_the_same_metrics_without_curves_and_the_dashboard_recomputes(
    env: dict[str, str], tmp_path: Path
) -> None:
    from backfarm.config import Settings
    from backfarm.dashboard.recompute import with_curve
    from backfarm.engine.artifacts import decode_equity
    from backfarm.results.embedded import EmbeddedStore

    lean = {**env, "BACKFARM_DATA_DIR": str(tmp_path / "lean")}
    args = ("backtest", "--grid", "--strategies", "momentum,breakout", "--days", "2", "--workers", "2",
            "--source", "synthetic")  # fmt: skip
    code, _, err = invoke(env, *args)
    assert code == 0, err
    code, _, err = invoke(lean, *args, "--no-curves")
    assert code == 0, err
    full = {r.job_id: r for r in EmbeddedStore(Path(env["BACKFARM_DATA_DIR"]) / "results").iter_results()}
    bare = {r.job_id: r for r in EmbeddedStore(tmp_path / "lean" / "results").iter_results()}
    assert len(full) == len(bare) > 64 and full.keys() == bare.keys()  # > 64: the pool path ran
    assert all(set(r.extra) == {"daily"} for r in bare.values())  # statistics stay; pictures go
    assert all(decode_equity(r.extra) is not None for r in full.values())
    assert {k: r.metrics for k, r in bare.items()} == {k: r.metrics for k, r in full.items()}
    assert {k: (r.moments, r.extra["daily"]) for k, r in bare.items()} == {
        k: (r.moments, r.extra["daily"]) for k, r in full.items()
    }
    assert {k: r.result_hash for k, r in bare.items()} == {k: r.result_hash for k, r in full.items()}
    job = next(iter(bare))
    shown, problem = with_curve(bare[job], Settings(data_dir=tmp_path / "lean"))
    assert problem is None and shown.extra["recomputed"] is True
    for part in ("equity", "trades"):  # the picture is recomputed, byte for byte
        assert shown.extra[part] == full[job].extra[part]
