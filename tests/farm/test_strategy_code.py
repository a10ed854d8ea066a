"""Strategy files on the farm: workers load their own copies, a worker without the right code hands the batch back,
and jobs end dead only when no live worker has it, with a reason naming every live worker's copy."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import backfarm.api as bf
from backfarm.farm.presence import Presence
from backfarm.results.redis_store import RedisStore
from backfarm.strategies import registry
from tests.farm.conftest import CHAOS_FILE
from tests.workers import ROOT, Farm, wait_for

EDGE = '''
import time

import numpy as np
from backfarm import Param, strategy


@strategy("edge", params=[Param("n", int, 10, 2, 500, (10, 20)), Param("sleep_ms", int, 0, 0, 1000)])
def edge(ind, p):
    """Long while the close is above its `n`-bar average (after sleeping `sleep_ms`)."""
    time.sleep(p["sleep_ms"] / 1000)
    return (ind.close > ind.sma(p["n"])).astype(np.float64)
'''
PERIOD = ("--start", "2025-06-01", "--end", "2025-06-03", "--granularity", "1h", "--source", "synthetic")
PARAMS = "edge:sleep_ms=200,n=" + "|".join(str(n) for n in range(2, 42))
"""40 parameter sets of the edge strategy, 0.2 s each: several batches, which keep the worker with the code busy for
about 8 s, so the worker without it takes some of them from the queue meanwhile."""


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m backfarm ARGS`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "backfarm", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def edge_file(folder: Path, edited: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "edge.py"
    path.write_text(textwrap.dedent(EDGE) + ("\n# edited\n" if edited else ""))
    return path


def status(env: dict[str, str], sweep: str) -> dict:
    done = cli(env, "status", sweep, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_worker_without_the_code_hands_its_batch_to_one_that_has_it(farm: Farm, tmp_path: Path) -> None:
    edge = edge_file(tmp_path / "strategies")
    has = farm.start("has", env={"BACKFARM_STRATEGY_PATH": f"{CHAOS_FILE}:{edge}"})
    lacks = farm.start("lacks")
    farm.ready(has, lacks)
    url = farm.env["BACKFARM_REDIS_URL"]
    with RedisStore(url) as store:
        wait_for(lambda: {"has@test", "lacks@test"} <= set(Presence(store.conn).live()), 30, "both workers' presence")
        assert (
            "edge" in Presence(store.conn).live()["has@test"]
            and "edge" not in Presence(store.conn).live()["lacks@test"]
        )
    submitted = cli(farm.env, "backtest", "--strategy-path", str(edge), "--params", PARAMS, "--symbols", "BTC-USD",
                    *PERIOD, "--detach")  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    sweep = submitted.stdout.strip()
    waited = cli(farm.env, "status", sweep, "--watch", timeout=60)
    assert waited.returncode == 0, waited.stderr
    report = status(farm.env, sweep)
    assert (report["total"], report["done"], report["dead"]) == (40, 40, 0)
    assert lacks.count("handing ") >= 1 and "lacks their strategy code (edge 1+code." in lacks.text()
    assert not re.search(r"'computed': [1-9]", lacks.text())  # every job ran where the code is
    assert re.search(r"'computed': [1-9]", has.text())
    shown = cli(farm.env, "leaderboard", "--sweep", sweep, "--format", "json", "--top", "0")
    rows = json.loads(shown.stdout)
    assert len(rows) == 40 and {r["strategy"] for r in rows} == {"edge"}


def test_jobs_end_dead_only_when_no_live_worker_has_the_code(farm: Farm, tmp_path: Path) -> None:
    edge = edge_file(tmp_path / "mine")
    other = edge_file(tmp_path / "theirs", edited=True)
    lacks = farm.start("lacks")
    differs = farm.start("differs", env={"BACKFARM_STRATEGY_PATH": f"{CHAOS_FILE}:{other}"})
    farm.ready(lacks, differs)
    url = farm.env["BACKFARM_REDIS_URL"]
    with RedisStore(url) as store:
        wait_for(lambda: {"lacks@test", "differs@test"} <= set(Presence(store.conn).live()), 30, "the presence keys")
        theirs = Presence(store.conn).live()["differs@test"]["edge"]
    submitted = cli(farm.env, "backtest", "--strategy-path", str(edge), "--params", "edge:n=5|6|7", "--symbols",
                    "BTC-USD", *PERIOD, "--detach")  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    sweep = submitted.stdout.strip()
    waited = cli(farm.env, "status", sweep, "--watch", timeout=120)
    report = status(farm.env, sweep)
    assert (report["total"], report["done"], report["dead"]) == (3, 0, 3), waited.stderr
    (why,) = report["dead_reasons"]
    mine = why["reason"].split("strategy edge ")[1].split(" ")[0]
    assert mine.startswith("1+code.") and mine != theirs
    assert why["reason"] == (
        f"no live worker has strategy edge {mine} (differs@test has {theirs}; lacks@test lacks it)"
    )
    assert report["strategy_code"] == {"edge": {theirs: ["differs@test"], "missing": ["lacks@test"]}}
    shown = cli(farm.env, "status", sweep)
    assert "no live worker has strategy edge" in shown.stdout
    assert f"strategy edge on the workers: {theirs} on differs@test; missing on lacks@test" in shown.stdout


def test_a_worker_off_the_backtest_queue_does_not_count_as_a_holder(farm: Farm, tmp_path: Path) -> None:
    edge = edge_file(tmp_path / "strategies")
    paper_only = farm.start("paper", env={"BACKFARM_STRATEGY_PATH": f"{CHAOS_FILE}:{edge}"}, queues="paper")
    farm.ready(paper_only)
    with RedisStore(farm.env["BACKFARM_REDIS_URL"]) as store:
        wait_for(lambda: "paper@test" in Presence(store.conn).live("paper"), 30, "the paper worker's presence")
        assert "paper@test" not in Presence(store.conn).live()


def test_the_python_api_runs_a_sweep_of_a_strategy_file_on_the_farm(
    farm: Farm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_table", None)  # this test's strategies only (restored after it)
    edge = edge_file(tmp_path / "strategies")
    worker = farm.start("w1", env={"BACKFARM_STRATEGY_PATH": f"{CHAOS_FILE}:{edge}"})
    farm.ready(worker)
    bf.load_strategies(edge)
    table = bf.sweep(["edge"], symbols=["BTC-USD", "ETH-USD"], grid=True, start="2025-06-01", end="2025-06-03",
                     granularity="1h", source="synthetic", settings=farm.settings)  # fmt: skip
    assert len(table) == 4 and set(table["n"]) == {10, 20} and set(table["symbol"]) == {"BTC-USD", "ETH-USD"}
    assert worker.count("succeeded") >= 1  # computed by the worker, not here
    assert table["strategy_version"].str.startswith("1+code.").all()


def test_editing_a_file_recomputes_and_reverting_it_reuses(tmp_path: Path) -> None:
    env = {"BACKFARM_DATA_DIR": str(tmp_path / "data"), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}
    edge = edge_file(tmp_path / "strategies")
    args = ["backtest", "--strategy-path", str(edge), "--strategies", "edge", "--symbols", "BTC-USD", *PERIOD]
    runs = []
    for edited in (False, True, False):
        edge_file(tmp_path / "strategies", edited=edited)
        done = subprocess.run([sys.executable, "-m", "backfarm", *args], cwd=ROOT, env={**os.environ, **env},
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout.split("\n", 1)[0])
    assert "1 job (1 computed, 0 reused)" in runs[0]
    assert "1 job (1 computed, 0 reused)" in runs[1]  # the edit is new code: never the old result
    assert "1 job (0 computed, 1 reused)" in runs[2]  # reverted: the first result again
