"""`leaderboard --kind` without a sweep ranks that kind's results, not the latest sweep's (paper results belong to no
sweep)."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from typer.testing import CliRunner

from backfarm.cli import app
from backfarm.results.embedded import EmbeddedStore
from tests.results.contract import make_record


def test_kind_without_a_sweep_ranks_that_kinds_results(tmp_path: Path) -> None:
    env = {"BACKFARM_DATA_DIR": str(tmp_path / "data"), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}
    runner = CliRunner()
    empty = runner.invoke(app, ["leaderboard", "--kind", "paper"], env=env)
    assert empty.exit_code == 0 and "no paper results yet: start a session with `backfarm paper start`" in empty.stdout
    args = ["backtest", "--strategies", "momentum", "--symbols", "BTC-USD", "--days", "2", "--granularity", "1h",
            "--source", "synthetic", "--workers", "1"]  # fmt: skip
    assert runner.invoke(app, args, env=env).exit_code == 0
    with closing(EmbeddedStore(tmp_path / "data" / "results")) as store:
        store.put([make_record("paper-acct-1", kind="paper", strategy="breakout", sharpe=1.5)])
    paper = runner.invoke(app, ["leaderboard", "--kind", "paper", "--format", "json"], env=env)
    assert paper.exit_code == 0, paper.output
    assert '"job_id": "paper-acct-1"' in paper.stdout and '"kind": "backtest"' not in paper.stdout
    where = runner.invoke(app, ["leaderboard", "--where", "kind=paper", "--format", "json"], env=env)
    assert where.stdout == paper.stdout
    latest = runner.invoke(app, ["leaderboard", "--format", "json"], env=env)  # no kind: the latest sweep
    assert '"kind": "backtest"' in latest.stdout and "paper-acct-1" not in latest.stdout
    backtests = runner.invoke(app, ["leaderboard", "--kind", "backtest", "--format", "json"], env=env)
    assert '"kind": "backtest"' in backtests.stdout and "paper-acct-1" not in backtests.stdout
