"""Whatever a user types or writes in a spec file, `backtest --dry-run` either expands the sweep or says what is
wrong in one line and exits 2: never a traceback, never anything stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from backfarm.cli import app

runner = CliRunner()
_junk = st.text(alphabet=st.sampled_from("0123456789abcxyz-_,.:;|=/ \t\x1bé[]{}"), max_size=20)
_VALUES: dict[str, st.SearchStrategy[str]] = {
    "--strategies": st.one_of(st.sampled_from(["momentum", "breakout,ma_crossover", "momentum,momentum", ""]), _junk),
    "--symbols": st.one_of(st.sampled_from(["BTC-USD", "BTC-USD,ETH-USD", "btc-usd", "BTC_USD"]), _junk),
    "--params": st.one_of(
        st.sampled_from(
            [
                "ma_crossover:fast=5|10,slow=30",
                "momentum:lookback=7",
                "breakout:entry=2,exit=3",
                "momentum:lookback=0",
                "ma_crossover:fast=30,slow=5",
                "nope:x=1",
                "momentum:x=1",
            ]
        ),
        _junk,
    ),  # fmt: skip
    "--days": st.one_of(st.integers(-5, 60).map(str), st.sampled_from(["99999999999999999999", "1e3", "nan"]), _junk),
    "--start": st.one_of(st.sampled_from(["2026-10-01", "2026-13-01", "2026-10-01T00:00:00Z", "1753-01-01"]), _junk),
    "--end": st.one_of(st.sampled_from(["2026-10-15", "2026-09-01", "9999-12-31"]), _junk),
    "--granularity": st.one_of(st.sampled_from(["1m", "1h", "1d", "7m", "6h"]), _junk),
    "--window": st.one_of(st.sampled_from(["7d", "1d", "0d", "2w", "90s"]), _junk),
    "--step": st.one_of(st.sampled_from(["7d", "1d", "0d", "3d"]), _junk),
    "--fee-bps": st.one_of(st.sampled_from(["0", "10", "-1", "1e9", "nan", "inf"]), _junk),
    "--spread-bps": st.one_of(st.sampled_from(["0", "5", "-3", "inf"]), _junk),
    "--stop-loss-bps": st.one_of(st.sampled_from(["50", "0", "10000", "nan"]), _junk),
    "--capital": st.one_of(st.sampled_from(["1000", "0", "-5", "nan", "inf", "1e308"]), _junk),
}
_FLAGS = ["--grid", "--quick", "--no-curves"]


def _one_line_or_ok(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2), (result.exit_code, result.output)
    if result.exit_code == 0:
        assert result.stdout.startswith("dry run: sweep "), result.stdout
    else:
        err = result.stderr
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err and "\x1b" not in err, err


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.sampled_from(sorted(_VALUES)).flatmap(lambda k: _VALUES[k].map(lambda v: [k, v])), max_size=5),
    st.lists(st.sampled_from(_FLAGS), max_size=2, unique=True),
)
@example([["--params", ""]], [])  # `--params ''` names nothing
def test_any_flags(tmp_path_factory: Any, options: list[list[str]], flags: list[str]) -> None:
    data = tmp_path_factory.mktemp("flags")
    args = ["backtest", "--dry-run", "--source", "synthetic", *[x for pair in options for x in pair], *flags]
    result = runner.invoke(app, args, env={"BACKFARM_DATA_DIR": str(data / "data"), "BACKFARM_REDIS_URL": ""})
    _one_line_or_ok(result)
    assert not (data / "data").exists()  # a dry run stores and fetches nothing


_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 100), st.floats(allow_nan=False, allow_infinity=False), _junk,
)  # fmt: skip
_json = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_junk, inner, max_size=3),
                     max_leaves=8)  # fmt: skip
_keys = st.sampled_from(["strategies", "symbols", "granularity", "days", "start", "end", "window", "step", "grid",
                         "params", "fee_bps", "capital", "source", "nope"])  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(_keys, _json, max_size=5))
@example({"params": {"": []}})  # found by a random run: a parameter table naming no strategy crashed
def test_any_spec_file(tmp_path_factory: Any, spec: dict[str, Any]) -> None:
    data = tmp_path_factory.mktemp("spec")
    path = Path(data) / "spec.json"
    path.write_text(json.dumps(spec))
    args = ["backtest", "--dry-run", "--source", "synthetic", "--spec", str(path)]
    result = runner.invoke(app, args, env={"BACKFARM_DATA_DIR": str(data / "data"), "BACKFARM_REDIS_URL": ""})
    _one_line_or_ok(result)
    assert not (data / "data").exists()
