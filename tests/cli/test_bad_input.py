"""Bad input is one line on stderr, exit 2, and nothing stored: spec files of the wrong types or shapes, paths that
cannot be written, a data directory that is a file, values out of range, and text that would drive the terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfarm.cli import app
from backfarm.results.embedded import EmbeddedStore
from backfarm.sweeps.spec import _CONVERT, SweepSpec, load_spec_file

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"BACKFARM_DATA_DIR": str(tmp_path / "data"), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}


def one_line_exit_2(result: object, message: str) -> None:
    code, err = result.exit_code, result.stderr  # type: ignore[attr-defined]
    assert code == 2, (code, result.output)  # type: ignore[attr-defined]
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bin.toml", b"\x00\xff\xfe\x80binary", "not a text file"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ("days.toml", b'days = "two"', "days must be a whole number of days, got 'two'"),
        ("grid.toml", b'grid = "no"', "grid must be true or false, got 'no'"),
        ("capital.json", b'{"capital": "lots"}', "capital must be a finite number, got 'lots'"),
        ("symbols.toml", b"symbols = [1, 2]", "symbols must be a list of names"),
        ("params.toml", b"[params]\nmomentum = 5", "params must be tables of parameter values (params.momentum)"),
        ("list.json", b"[1, 2]", "a spec is a table of keys (TOML) or an object (JSON), got list"),
        ("start.toml", b"start = 5", "start must be a date like 2026-10-01"),
    ],
)
def test_a_bad_spec_file_is_one_line(
    env: dict[str, str], tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    spec = tmp_path / name
    spec.write_bytes(content)
    one_line_exit_2(runner.invoke(app, ["backtest", "--spec", str(spec), "--source", "synthetic"], env=env), message)
    assert (
        not (tmp_path / "data" / "results").exists()
        or "no sweeps yet" in runner.invoke(app, ["sweeps"], env=env).stdout
    )


def test_a_toml_date_is_a_date_and_every_spec_key_is_checked(tmp_path: Path) -> None:
    spec = tmp_path / "dates.toml"
    spec.write_text("start = 2026-01-01\nend = 2026-01-08T06:30:00Z\ngrid = true\ndays = 7\ncapital = 5000\n")
    data = load_spec_file(spec)
    assert (data["start"], data["end"], data["grid"], data["capital"]) == (
        "2026-01-01",
        "2026-01-08T06:30:00Z",
        True,
        5000.0,
    )
    assert set(_CONVERT) == set(SweepSpec.__dataclass_fields__)  # a new spec field gets its type check too


def test_results_out_where_nothing_can_be_written(env: dict[str, str], tmp_path: Path) -> None:
    args = ["backtest", "--strategies", "momentum", "--symbols", "BTC-USD", "--days", "2", "--granularity", "1h",
            "--source", "synthetic", "--workers", "1"]  # fmt: skip
    assert runner.invoke(app, args, env=env).exit_code == 0
    with EmbeddedStore(tmp_path / "data" / "results") as store:
        sweep_id = store.sweeps()[0].sweep_id
    afile = tmp_path / "afile"
    afile.write_text("x")
    latest = runner.invoke(app, ["results", "latest", "--out", str(tmp_path / "latest.csv")], env=env)
    assert latest.exit_code == 0 and f"of sweep {sweep_id}" in latest.stderr  # as `report latest` takes it
    for out, message in (
        (tmp_path / "missing" / "r.parquet", "is not a directory"),
        (afile / "r.csv", "is not a directory"),
    ):
        one_line_exit_2(runner.invoke(app, ["results", sweep_id, "--out", str(out)], env=env), message)


def test_a_data_directory_that_is_a_file(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    env = {"BACKFARM_DATA_DIR": str(afile), "BACKFARM_REDIS_URL": ""}
    for command in (["data", "ls"], ["sweeps"], ["paper", "status"], ["leaderboard"]):
        one_line_exit_2(runner.invoke(app, command, env=env), "is a file (--data-dir / BACKFARM_DATA_DIR)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["leaderboard", "--kind", "live"], "unknown kind 'live' (choose from: backtest, paper)"),
        (["leaderboard", "--where", "kind=live"], "unknown kind 'live'"),
        (["paper", "start", "--duration", "99999999999d", "--feed", "replay", "--source", "synthetic"],
         "--duration must be at most 3,650d"),
    ],
)  # fmt: skip
def test_values_out_of_range(env: dict[str, str], args: list[str], message: str) -> None:
    one_line_exit_2(runner.invoke(app, args, env=env), message)


def test_a_huge_top_means_all(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["leaderboard", "--top", "99999999999999999999"], env=env)
    assert result.exit_code == 0 and "Traceback" not in result.output


def test_control_characters_from_a_file_are_not_echoed_raw(env: dict[str, str], tmp_path: Path) -> None:
    evil = tmp_path / "evil.csv"
    evil.write_bytes(b"time,op\x1b[31men\x07,high,low,close,volume\n1,2,3,4,5,6\n")
    result = runner.invoke(app, ["data", "import", str(evil), "--symbol", "EVIL-USD", "--granularity", "1h"], env=env)
    one_line_exit_2(result, "op\\x1b[31men\\x07")
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
