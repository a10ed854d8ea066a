"""`backfarm status` shows paper sessions next to the latest sweep (the terminal dashboard's paper part)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from backfarm.cli import app

runner = CliRunner()


def test_status_lists_paper_sessions_with_progress(tmp_path: Path) -> None:
    env = {"BACKFARM_DATA_DIR": str(tmp_path), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}
    done = runner.invoke(app, ["backtest", "--source", "synthetic", "--quick", "--days", "1"], env=env)
    assert done.exit_code == 0, done.stderr
    started = runner.invoke(
        app,
        ["paper", "start", "--feed", "replay", "--speed", "max", "--from", "2026-10-01", "--duration", "2h",
         "--strategies", "momentum", "--symbols", "BTC-USD", "--source", "synthetic", "--wait"],
        env=env,
    )  # fmt: skip
    assert started.exit_code == 0, started.stderr
    session_id = started.stdout.split()[0]
    shown = runner.invoke(app, ["status"], env=env)
    assert shown.exit_code == 0, shown.stderr
    assert "paper sessions" in shown.stdout
    row = next(line for line in shown.stdout.splitlines() if session_id in line)
    assert "finished" in row and "replay" in row and "120" in row  # 2 h of 1-minute bars
