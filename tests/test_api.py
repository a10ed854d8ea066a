"""The Python API: one backtest (cached candles or a DataFrame), a sweep as a DataFrame, the lookahead check; the
same numbers as the CLI for the same inputs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import backfarm.api as bf
from backfarm import Param, Strategy, strategy
from backfarm.cli import app
from backfarm.config import Settings
from backfarm.core.jobs import Params
from backfarm.errors import DataError, ValidationError
from backfarm.strategies import registry
from backfarm.strategies.indicators import Indicators

runner = CliRunner()
WINDOW = {"start": "2025-06-01", "end": "2025-06-08", "granularity": "1h", "source": "synthetic"}
FLAGS = ["--start", "2025-06-01", "--end", "2025-06-08", "--granularity", "1h", "--source", "synthetic"]
TREND = '''
import numpy as np
from backfarm import Param, strategy


@strategy("trend_api", params=[Param("n", int, 12, 2, 500, (6, 12, 24)), Param("band", float, 0.0, 0.0, 0.1)])
def trend_api(ind, p):
    """Long while the close is more than `band` above its `n`-bar average."""
    return (ind.close > ind.sma(p["n"]) * (1 + p["band"])).astype(np.float64)
'''


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_table", None)
    monkeypatch.setattr(registry, "entry_points", lambda group: [])


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"BACKFARM_DATA_DIR": str(tmp_path / "data"), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def trend_file(tmp_path: Path) -> Path:
    path = tmp_path / "strategies" / "trend.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(TREND))
    return path


def cli(env: dict[str, str], *args: str) -> str:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_cli_and_the_api_give_identical_numbers(env: dict[str, str], trend_file: Path) -> None:
    cli(env, "backtest", "--strategy-path", str(trend_file), "--params", "trend_api:n=24,band=0.01",
        "--symbols", "ETH-USD", "--fee-bps", "10", "--stop-loss-bps", "150", *FLAGS)  # fmt: skip
    (row,) = json.loads(cli(env, "leaderboard", "--format", "json", "--top", "0"))
    assert bf.load_strategies(trend_file) == ["trend_api"]
    costs = bf.Costs(fee_bps=10, stop_loss_bps=150)
    run = bf.backtest("trend_api", params={"n": 24, "band": 0.01}, symbol="ETH-USD", costs=costs, **WINDOW)
    assert run.record.job_id == row["job_id"]
    assert run.metrics == row["metrics"]  # every metric, to the last digit
    assert run.record.strategy_version == registry.identity("trend_api")
    # The sweep from Python reuses the CLI's result and adds the rest of the grid, with the CLI's numbers.
    table = bf.sweep("trend_api", symbols=["ETH-USD"], grid=True, costs=costs, **WINDOW)
    assert len(table) == 3 and set(table["n"]) == {6, 12, 24}
    out = cli(env, "backtest", "--strategy-path", str(trend_file), "--strategies", "trend_api", "--grid",
              "--symbols", "ETH-USD", "--fee-bps", "10", "--stop-loss-bps", "150", *FLAGS)  # fmt: skip
    assert "3 jobs (0 computed, 3 reused)" in out
    rows = {r["job_id"]: r for r in json.loads(cli(env, "leaderboard", "--format", "json", "--top", "0"))}
    for record in table.to_dict("records"):
        assert record["sharpe"] == rows[record["job_id"]]["metrics"]["sharpe"]
        assert record["trades"] == rows[record["job_id"]]["metrics"]["trades"]


def test_a_run_has_full_equity_trades_and_a_picture(env: dict[str, str]) -> None:
    run = bf.backtest("ma_crossover", params={"fast": 5, "slow": 20}, symbol="BTC-USD", **WINDOW)
    assert len(run.equity) == len(run.candles) == 168 and run.equity.index.tz is not None
    assert run.equity.iloc[-1] == pytest.approx(10_000 * (1 + run.metrics["total_return"]), rel=1e-9)
    trades = run.trades
    assert len(trades) == run.metrics["trades"] > 0
    assert list(trades.columns[:4]) == ["entry_bar", "entry_time", "exit_bar", "exit_time"]
    assert (trades["exit_time"] >= trades["entry_time"]).all()
    assert trades["pnl"].sum() == pytest.approx(run.equity.iloc[-1] - 10_000, abs=1e-6)
    png = run._repr_png_()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert "ma_crossover" in repr(run) and "sharpe=" in repr(run)


def test_a_dataframe_backtest_equals_the_cached_one(env: dict[str, str]) -> None:
    cached = bf.backtest("momentum", symbol="BTC-USD", **WINDOW)
    c = cached.candles
    frame = pd.DataFrame(
        {"Open": c.open, "High": c.high, "Low": c.low, "Close": c.close, "Volume": c.volume},
        index=pd.to_datetime(c.ts, unit="ns"),  # naive: UTC
    )
    run = bf.backtest("momentum", data=frame.sample(frac=1.0, random_state=1))  # any row order
    assert run.metrics == cached.metrics and run.record.source == "dataframe" and run.record.granularity == "1h"
    assert run.record.job_id != cached.record.job_id  # other candles, other identity
    in_seconds = frame.set_axis(frame.index.as_unit("s"))  # a DatetimeIndex of another resolution
    assert bf.backtest("momentum", data=in_seconds).metrics == cached.metrics
    with_gap = frame.drop(frame.index[50:53]).reset_index(names="time")
    gapped = bf.backtest("momentum", data=with_gap)
    assert gapped.record.gaps == 3 and len(gapped.candles) == len(c)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["close"]), r"data lacks the column\(s\) close \(it needs open, high, low, close\)"),
        (lambda f: f.reset_index(drop=True), "data needs a DatetimeIndex or a 'time' column"),
        (lambda f: f.assign(high=f["low"] * 0.5), "high .* < low"),
        (lambda f: f.set_axis(f.index + pd.to_timedelta(np.arange(len(f)) * 90, unit="s")), "90 s apart"),
        (lambda f: f.iloc[:1], "holds 1 bars"),
    ],
)
def test_bad_dataframes_are_one_line_errors(change: object, message: str) -> None:
    n = 48
    index = pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC")
    close = np.linspace(100.0, 110.0, n)
    frame = pd.DataFrame({"open": close, "high": close + 1, "low": close - 1, "close": close}, index=index)
    with pytest.raises(DataError, match=message) as err:
        bf.backtest("momentum", data=change(frame))  # type: ignore[operator]
    assert "\n" not in str(err.value)


def test_a_notebook_class_and_a_decorated_function_run_and_check(env: dict[str, str]) -> None:
    class Always(Strategy):
        """Always invested."""

        name = "always_api"
        params = (Param("unused", int, 1, 1, 10),)

        def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
            return np.ones(ind.n)

    run = bf.backtest(Always, symbol="BTC-USD", **WINDOW)
    assert run.metrics["exposure"] > 0.99 and registry.origin("always_api").kind == "registered"

    @strategy("peek_api")
    def peek(ind: Indicators, p: Params) -> np.ndarray:
        """Long when the next close is higher (lookahead)."""
        c = np.asarray(ind.close)
        return np.append(c[1:] > c[:-1], False).astype(np.float64)

    report = bf.check(peek, days=2)
    assert not report.ok and report.message.startswith("cheater:")
    assert bf.check(Always, days=2).ok
    with pytest.raises(ValidationError, match="strategy peek_api fails the lookahead check"):
        bf.sweep([peek], symbols=["BTC-USD"], **WINDOW)
    table = bf.sweep([peek], symbols=["BTC-USD"], allow_lookahead=True, **WINDOW)
    assert list(table["strategy_version"]) == [registry.identity("peek_api")]
    assert table["strategy_version"][0].endswith("+lookahead")
    assert Settings.from_env().data_dir == Path(env["BACKFARM_DATA_DIR"])


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_block(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = README.read_text()
    after = text[text.index(heading) :]
    start = after.index("```python\n") + len("```python\n")
    return after[start : after.index("```", start)]


def test_the_readme_python_api_example_runs(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_block("### Python API"), "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "dip.png").read_bytes().startswith(b"\x89PNG")


def test_the_readme_strategy_file_example_runs(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "ema_cross.py").write_text(readme_python_block("### Write your own strategy"))
    out = cli(env, "backtest", "--source", "synthetic", "--days", "7", "--strategy-path", str(folder),
              "--strategies", "ema_cross", "--grid")  # fmt: skip
    assert "30 jobs (30 computed, 0 reused)" in out and "ema_cross" in out  # a grid of 6 on 5 symbols
