"""Kernels compiled at install: `backfarm compile`, the check behind it, and the notice a first run prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfarm.cli import app
from backfarm.execution import runner as runner_module
from backfarm.execution.runner import kernels_compiled, warm_up

cli = CliRunner()


def test_an_empty_numba_cache_counts_as_not_compiled(tmp_path: Path) -> None:
    """What a fresh install looks like (numba writes where NUMBA_CACHE_DIR says); checking compiles nothing."""
    code = "from backfarm.execution.runner import kernels_compiled; print(kernels_compiled())"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert not (tmp_path / "numba").exists() or not any((tmp_path / "numba").rglob("*.nbi"))


def test_after_a_warm_up_the_kernels_count_as_compiled_and_compile_says_so() -> None:
    warm_up()
    assert kernels_compiled()
    result = cli.invoke(app, ["compile"])
    assert result.exit_code == 0 and "the kernels are compiled" in result.stdout


def test_a_first_backtest_says_it_compiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "kernels_compiled", lambda: False)
    env = {"BACKFARM_DATA_DIR": str(tmp_path / "data"), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}
    result = cli.invoke(app, ["backtest", "--days", "1", "--source", "synthetic", "--strategies", "momentum"], env=env)
    assert result.exit_code == 0, result.stderr
    assert "compiling the engine's kernels first" in result.stderr
    monkeypatch.setattr(runner_module, "kernels_compiled", lambda: True)
    result = cli.invoke(app, ["backtest", "--days", "1", "--source", "synthetic", "--strategies", "momentum"], env=env)
    assert result.exit_code == 0 and "compiling" not in result.stderr
