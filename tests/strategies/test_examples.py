"""The example strategies (examples/strategies): they load, pass the lookahead check, and do what their rules say."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from backfarm.cli import app
from backfarm.strategies import registry
from backfarm.strategies.indicators import Indicators
from tests.conftest import ROOT
from tests.strategies.test_check import random_walk

EXAMPLES = ROOT / "examples" / "strategies"
NAMES = ["momentum_filter", "rsi_dip", "vol_trend"]


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_table", None)
    monkeypatch.setattr(registry, "entry_points", lambda group: [])


def test_the_examples_pass_strategies_check(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["strategies", "check", "--strategy-path", str(EXAMPLES), "--days", "2"],
        env={"BACKFARM_DATA_DIR": str(tmp_path), "BACKFARM_REDIS_URL": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[1].rstrip(":") for line in lines] == NAMES
    assert all(line.startswith("ok") and "truncations agree" in line for line in lines)


def test_hold_keeps_the_position_from_entry_to_exit() -> None:
    assert registry.load_paths([EXAMPLES]) == NAMES
    hold = sys.modules["_signals"].hold  # the helper module beside the examples, imported by them
    enter = np.array([0, 1, 0, 0, 1, 0, 0, 1, 0], dtype=bool)
    leave = np.array([0, 0, 0, 1, 0, 1, 0, 1, 0], dtype=bool)
    assert hold(enter, leave).tolist() == [0, 1, 1, 0, 1, 0, 0, 0, 0]  # leave wins a tie (bar 7)


def test_vol_trend_holds_fractions_and_rsi_dip_holds_between_its_levels() -> None:
    registry.load_paths([EXAMPLES])
    ind = Indicators(random_walk(3000))
    vol = registry.get_strategy("vol_trend")
    p = vol.resolve()
    out = vol.exposure(ind, p)
    assert out.dtype == np.float64 and ((out >= 0) & (out <= 1)).all()
    held = out[out > 0]
    assert held.size and (held < 1).any()  # fractional positions
    above = ind.close > ind.ema(100)
    assert (out[~above] == 0).all()
    rsi = registry.get_strategy("rsi_dip")
    exposure = rsi.exposure(ind, rsi.resolve())
    level = ind.rsi(14)
    entries = np.flatnonzero(np.diff(exposure) > 0) + 1
    exits = np.flatnonzero(np.diff(exposure) < 0) + 1
    assert entries.size and exits.size
    assert (level[entries] < 30).all() and (level[exits] > 55).all()  # in below `entry`, out above `exit`
    assert (level[exposure == 1] <= 55).all()  # never held above the exit level
