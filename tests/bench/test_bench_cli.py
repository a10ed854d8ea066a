"""``backfarm bench`` on tiny sizes: the JSON report's shape, the printed report, validation, ratios and targets.

No timing is asserted (the machine is shared): only that every figure is there, well-formed and consistent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from backfarm.cli import app
from benchmarks.harness import TARGETS, ratios, targets

runner = CliRunner()
TINY = ["--repeats", "1", "--days", "1", "--symbols", "1", "--no-farm", "--no-store"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"BACKFARM_DATA_DIR": str(tmp_path / "data"), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["bench", *args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def assert_stats(stats: dict[str, Any], runs: int = 1) -> None:
    assert set(stats) == {"median", "min", "max", "runs"}
    assert stats["runs"] == runs
    assert 0 < stats["min"] <= stats["median"] <= stats["max"]


def test_json_report_shape(env: dict[str, str], tmp_path: Path) -> None:
    code, out, _ = invoke(
        env, "--json", *TINY, "--strategies", "momentum", "--no-references", "--days-scaling", "--scaling-days", "1,2"
    )
    assert code == 0
    report = json.loads(out)
    assert list(report) == [
        "machine", "config", "warm_up_s", "data_s", "per_core", "screen", "embedded", "embedded_no_curves", "memory",
        "days_scaling", "references", "farm", "store", "ratios", "targets",
    ]  # fmt: skip
    assert report["machine"]["cores"] >= 1
    cfg = report["config"]
    # momentum's default grid is 7 lookbacks × 7 thresholds, on one symbol
    assert cfg == {**cfg, "days": 1, "bars": 1440, "symbols": ["BTC-USD"], "jobs": 49, "repeats": 1}
    per_core = report["per_core"]
    assert per_core["bars"] == 1440
    assert list(per_core["strategies"]) == ["momentum"]
    assert per_core["strategies"]["momentum"]["grid"] == 49
    assert_stats(per_core["strategies"]["momentum"]["us_per_backtest"])
    assert per_core["memory_floor"]["backtests_per_s"] > 0
    screen = report["screen"]
    assert screen["jobs"] == 5  # the seeds' screen: five strategies with default parameters, one symbol here
    assert_stats(screen["seconds"])
    assert_stats(screen["backtests_per_s"])
    workers = [row["workers"] for row in report["embedded"]]
    assert workers[0] == 1 and workers == sorted(set(workers))
    for row in report["embedded"]:
        assert row["jobs"] == 49
        assert_stats(row["backtests_per_s"])
        assert_stats(row["end_to_end_backtests_per_s"])
        assert_stats(row["seconds"])
    lean = report["embedded_no_curves"]
    assert lean["workers"] == workers[-1] and lean["jobs"] == 49
    assert_stats(lean["backtests_per_s"])
    assert report["memory"]["parent_peak_mb"] > 0
    rows = report["days_scaling"]["rows"]
    assert [(r["days"], r["bars"], r["jobs"]) for r in rows] == [(1, 1440, 49), (2, 2880, 49)]
    assert rows[0]["time_ratio"] == 1.0 and rows[1]["bars_ratio"] == 2.0
    assert report["references"] is None and report["farm"] is None and report["store"] is None
    assert report["ratios"]["embedded_scaling"] > 0
    assert report["ratios"]["scaling_bars_ratio"] == 2.0
    assert set(report["targets"]) == set(TARGETS)
    assert report["targets"]["farm_vs_embedded"]["met"] is None  # not measured
    assert report["targets"]["store_big_vs_empty"]["met"] is None
    assert report["targets"]["vs_vectorbt"]["met"] is None
    assert isinstance(report["targets"]["screen_seconds"]["met"], bool)
    assert not (tmp_path / "data").exists()  # the benchmark works in its own temporary directory


def test_store_section_on_a_small_store(env: dict[str, str]) -> None:
    """The store measurements at a size a test can afford: every figure there and consistent."""
    args = ["--repeats", "1", "--days", "1", "--symbols", "1", "--no-farm", "--no-references"]
    code, out, err = invoke(env, "--json", *args, "--strategies", "momentum", "--store-size", "500")
    assert code == 0, err
    report = json.loads(out)
    store = report["store"]
    assert store["size"] == 500 and store["build"]["results"] == 500
    into = store["sweep_into"]
    assert into["jobs"] == 49 and into["empty_backtests_per_s"]["runs"] == into["big_backtests_per_s"]["runs"] == 5
    medians = into["big_backtests_per_s"]["median"], into["empty_backtests_per_s"]["median"]
    assert into["ratio"] == pytest.approx(medians[0] / medians[1])
    assert store["results"] == 500 + 5 * 49  # the big store keeps the rounds' results
    assert 0 < store["bytes_per_result"] < 100_000
    readers = store["readers"]
    assert len(readers["commands"]) == 5
    for row in readers["commands"].values():
        assert_stats(row["seconds"], 5)
        assert 0 < row["peak_mb"] < 1000
    work = store["storage_vs_compute"]
    assert work["jobs"] == 49 * 8 and work["ratio"] > 0  # 8 windows of one day
    redis = store["redis"]  # redis-server is installed wherever the tests run
    assert redis["results"] == 500  # the filled store, before the rounds
    assert redis["cpu_us_per_result_big"]["runs"] == redis["cpu_us_per_result_empty"]["runs"] == 5
    assert redis["bytes_per_result"] > 0 and redis["cpu_ratio"] > 0 and len(redis["readers"]["commands"]) == 5
    targets_ = report["targets"]
    assert targets_["redis_results_in_2gb"]["value"] == pytest.approx(2 * 2**30 / redis["bytes_per_result"])
    assert targets_["bytes_per_result"]["value"] == store["bytes_per_result"]
    assert targets_["store_big_vs_empty"]["value"] == into["ratio"]
    assert isinstance(targets_["leaderboard_over_version_s"]["met"], bool)


def test_references_report_their_trade_counts(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vectorbt", None)  # as if not installed: reported, not raised
    code, out, _ = invoke(env, "--json", *TINY, "--strategies", "ma_crossover")
    assert code == 0
    refs = json.loads(out)["references"]
    assert refs["strategy"] == "ma_crossover" and refs["params"] == 46 and refs["jobs"] == 46
    assert len(refs["backfarm"]["trades"]) == 1 and len(refs["backfarm"]["trades"][0]) == 46
    assert refs["vectorbt"]["available"] is False
    assert "backfarm[bench]" in refs["vectorbt"]["reason"]
    bt = refs["backtesting_py"]
    assert bt["available"] is True
    assert bt["trades_match"] is True and bt["trade_mismatches"] == 0  # same rule, same fills, same trade counts
    assert_stats(bt["backtests_per_s"])
    assert json.loads(out)["ratios"]["vs_backtesting_py"] > 0


def test_printed_report(env: dict[str, str]) -> None:
    code, out, _ = invoke(env, *TINY, "--strategies", "volatility", "--no-references")
    assert code == 0
    for heading in ("backfarm bench", "per core", "screen", "embedded executor", "ratios", "targets"):
        assert heading in out
    assert "not measured" in out  # the farm and vectorbt targets


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--symbols", "6"], "--symbols must be between 1 and 5"),
        (["--days", "0"], "--days must be at least 1"),
        (["--scaling-days", "30,x"], "--scaling-days must be comma-separated whole days"),
        (["--strategies", "momentom"], "did you mean 'momentum'"),
    ],
)
def test_bad_options_are_user_errors(env: dict[str, str], args: list[str], message: str) -> None:
    code, _, err = invoke(env, *TINY, "--no-references", *args)
    assert code == 2
    assert message in err


def _stats(value: float) -> dict[str, float]:
    return {"median": value, "min": value, "max": value, "runs": 1}


def test_ratios_and_targets_from_a_report() -> None:
    report: dict[str, Any] = {
        "embedded": [
            {"workers": 1, "backtests_per_s": _stats(4000.0)},
            {"workers": 2, "backtests_per_s": _stats(7000.0)},
        ],
        "per_core": {"backtests_per_s": 4000.0, "memory_floor": {"backtests_per_s": 20000.0}},
        "screen": {"seconds": _stats(0.2)},
        "memory": {"parent_peak_mb": 300.0, "child_peak_mb": 250.0},
        "references": {
            "backfarm": {"embedded_backtests_per_s": _stats(7000.0), "one_process_backtests_per_s": _stats(4000.0)},
            "vectorbt": {"available": True, "backtests_per_s": _stats(100.0)},
            "backtesting_py": {"available": False, "reason": "not installed"},
        },
        "farm": {
            "runs": [
                {"backtests_per_s": _stats(3000.0)},
                {"backtests_per_s": _stats(5500.0), "peak_mb_per_process": 520.0},
            ]
        },
        "days_scaling": {
            "rows": [{"time_ratio": 1.0, "bars_ratio": 1.0}, {"time_ratio": 13.0, "bars_ratio": 365 / 30}]
        },
    }
    report["ratios"] = ratios(report)
    r = report["ratios"]
    assert r["embedded_scaling"] == pytest.approx(1.75)
    assert r["vs_seeds"] == pytest.approx(7000 / 7.6)
    assert r["per_core_vs_memory_floor"] == pytest.approx(0.2)
    assert r["vs_vectorbt"] == pytest.approx(70.0) and r["vs_vectorbt_one_process"] == pytest.approx(40.0)
    assert r["vs_backtesting_py"] is None
    assert r["farm_scaling"] == pytest.approx(5500 / 3000) and r["farm_vs_embedded"] == pytest.approx(5500 / 7000)
    t = targets(report)
    assert t["farm_vs_embedded"] == {"value": pytest.approx(5500 / 7000), "target": 0.85, "met": False}
    assert t["vs_vectorbt"]["met"] is True  # 70 >= 50
    assert t["vs_backtesting_py"]["met"] is None
    assert t["screen_seconds"]["met"] is True
    assert t["peak_mb_per_process"] == {"value": 520.0, "target": 500.0, "met": False}  # the farm worker's peak
    assert t["time_growth_vs_linear"]["value"] == pytest.approx(13.0 / (365 / 30))
    assert t["time_growth_vs_linear"]["met"] is True
