"""Numbers on screen read right: counts agree with their nouns and carry thousands separators, rates never read 0/s."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfarm.cli import app
from backfarm.core.formatting import count, per_second


@pytest.mark.parametrize(
    ("n", "noun", "plural", "text"),
    [
        (0, "job", None, "0 jobs"),
        (1, "job", None, "1 job"),
        (2, "symbol", None, "2 symbols"),
        (1136, "job", None, "1,136 jobs"),
        (1, "process", "processes", "1 process"),
        (3, "strategy", "strategies", "3 strategies"),
    ],
)
def test_counts(n: int, noun: str, plural: str | None, text: str) -> None:
    assert count(n, noun, plural) == text


@pytest.mark.parametrize(
    ("rate", "text"),
    [(0.0, "—"), (float("nan"), "—"), (0.4249, "0.42/s"), (1.0, "1/s"), (7.34, "7.3/s"), (10.4, "10/s"),
     (4794.2, "4,794/s"), (1_234_567.0, "1,234,567/s")],
)  # fmt: skip
def test_rates(rate: float, text: str) -> None:
    assert per_second(rate) == text


def test_a_one_job_sweep_says_one_job(tmp_path: Path) -> None:
    env = {"BACKFARM_DATA_DIR": str(tmp_path / "data"), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}
    args = ["backtest", "--strategies", "momentum", "--symbols", "BTC-USD", "--days", "2", "--granularity", "1h",
            "--source", "synthetic", "--workers", "1"]  # fmt: skip
    first = CliRunner().invoke(app, args, env=env)
    assert first.exit_code == 0, first.output
    assert "1 job (1 computed, 0 reused)" in first.stdout
    # "1 backtest in 0.01 s (96/s on 1 process)": a rate is a whole number from 10/s, else two digits, never 0/s
    assert re.search(r"1 backtest in [\d.]+ s \((?:[1-9][\d,]*|\d\.\d+)/s on 1 process\)", first.stdout)
    again = CliRunner().invoke(app, args, env=env)
    assert again.exit_code == 0 and "nothing to compute: the result reused" in again.stdout
