"""Sweep specs: periods, walk-forward windows, --params parsing, expansion and validation before any work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backfarm.core.jobs import make_batches
from backfarm.errors import ConfigError, ValidationError
from backfarm.sweeps.expand import expand, parse_duration, period, windows
from backfarm.sweeps.spec import SweepSpec, load_spec_file, parse_params, spec_from

NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
TODAY = datetime(2026, 11, 23, tzinfo=UTC)


def test_days_period_ends_at_today_midnight_so_ids_are_stable_all_day() -> None:
    spec = SweepSpec(days=30)
    assert period(spec, NOW) == (TODAY - timedelta(days=30), TODAY)
    later = NOW + timedelta(hours=8)
    assert expand(spec, now=NOW).sweep_id == expand(spec, now=later).sweep_id


def test_start_end_and_start_plus_days() -> None:
    spec = spec_from(start="2026-10-01", end="2026-10-08")
    assert period(spec, NOW) == (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 8, tzinfo=UTC))
    spec = spec_from(start="2026-10-01", days=3)
    assert period(spec, NOW) == (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 4, tzinfo=UTC))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"days": 0}, "--days must be a number of days from 1 to 36,500, got 0"),
        ({"days": -3}, "--days must be a number of days from 1 to 36,500, got -3"),
        ({"days": 36_501}, "--days must be a number of days from 1 to 36,500, got 36,501"),
        ({"start": "2026-10-08", "end": "2026-10-01"}, "the period is empty"),
        ({"start": "yesterday"}, "--start must be a date"),
        ({"start": "2026-11-20", "end": "2027-01-01"}, "ends in the future"),
    ],
)
def test_bad_periods(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        period(spec_from(**flags), NOW)


def test_walk_forward_windows() -> None:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    end = start + timedelta(days=30)
    got = windows(start, end, "7d", None)
    assert [(a.day, b.day) for a, b in got] == [(1, 8), (8, 15), (15, 22), (22, 29)]
    overlapping = windows(start, end, "10d", "5d")
    assert len(overlapping) == 5 and overlapping[-1][1] == start + timedelta(days=30)
    assert windows(start, end, None, None) == [(start, end)]


def test_window_longer_than_period_is_a_clear_error() -> None:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    with pytest.raises(ValidationError, match=r"--window 40d is longer than the period \(30 days"):
        windows(start, start + timedelta(days=30), "40d", None)


@pytest.mark.parametrize("text", ["7", "7x", "0d", "-1d", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValidationError, match="must look like 30m, 4h, 7d or 2w"):
        parse_duration(text, "--window")


def test_parse_params_sets_and_alternatives() -> None:
    got = parse_params(["ma_crossover:fast=10,slow=30", "momentum:lookback=30|60;ma_crossover:fast=5,slow=20"])
    assert got == {
        "ma_crossover": [{"fast": "10", "slow": "30"}, {"fast": "5", "slow": "20"}],
        "momentum": [{"lookback": "30"}, {"lookback": "60"}],
    }
    with pytest.raises(ValidationError, match="strategy:key=value"):
        parse_params(["fast=10"])
    with pytest.raises(ValidationError, match="expected key=value"):
        parse_params(["momentum:lookback"])


def test_a_key_given_twice_in_one_parameter_set_is_an_error() -> None:
    with pytest.raises(ValidationError, match="fast is given twice in 'ma_crossover:fast=10,fast=3'"):
        parse_params(["ma_crossover:fast=10,fast=3"])
    assert parse_params(["ma_crossover:fast=10;ma_crossover:fast=3"]) == {
        "ma_crossover": [{"fast": "10"}, {"fast": "3"}]
    }


def test_params_name_their_strategies_unless_strategies_are_given(tmp_path: Path) -> None:
    alone = SweepSpec.from_flags({"params": ["ma_crossover:fast=5|10,slow=30|60"]})
    assert alone.strategies == ("ma_crossover",)
    assert {j.strategy for j in expand(alone, now=NOW).jobs} == {"ma_crossover"}
    assert len(expand(alone, now=NOW).jobs) == 4 * len(alone.symbols)
    two = SweepSpec.from_flags({"params": ["momentum:lookback=12", "ma_crossover:fast=5,slow=20"]})
    assert two.strategies == ("momentum", "ma_crossover")
    chosen = SweepSpec.from_flags({"params": ["ma_crossover:fast=5,slow=20"], "strategies": "ma_crossover,momentum"})
    assert chosen.strategies == ("ma_crossover", "momentum")  # said otherwise: momentum runs at its defaults
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text('strategies = ["breakout"]\n[params]\nbreakout = [{entry = 20, exit = 10}]\n')
    from_file = SweepSpec.from_flags({"params": ["ma_crossover:fast=5,slow=20"]}, spec_file)
    assert from_file.strategies == ("breakout",)  # the file says which run
    only_params = tmp_path / "params.toml"
    only_params.write_text("[params]\nbreakout = [{entry = 20, exit = 10}]\n")
    assert SweepSpec.from_flags({}, only_params).strategies == ("breakout",)


def test_a_json_spec_with_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text('{"days": 7, "days": 30}')
    with pytest.raises(ConfigError, match="key 'days' is given twice"):
        load_spec_file(path)


def test_default_expansion_is_the_seed_screen() -> None:
    exp = expand(SweepSpec(), now=NOW)
    assert len(exp.jobs) == 25
    assert {j.strategy for j in exp.jobs} == {"momentum", "mean_reversion", "breakout", "ma_crossover", "volatility"}
    assert {j.symbol for j in exp.jobs} == {"BTC-USD", "ETH-USD", "SOL-USD", "LINK-USD", "POL-USD"}
    assert len({j.job_id for j in exp.jobs}) == 25
    batches = make_batches(exp.jobs, 100)
    assert len(batches) == 5 and all(len({j.symbol for j in b.jobs}) == 1 for b in batches)


def test_grid_expansion_reaches_a_thousand_jobs() -> None:
    exp = expand(SweepSpec(grid=True), now=NOW)
    assert len(exp.jobs) >= 1000
    assert len({j.job_id for j in exp.jobs}) == len(exp.jobs)


def test_explicit_params_are_resolved_and_checked() -> None:
    spec = spec_from(strategies=("ma_crossover",), params=parse_params(["ma_crossover:fast=10,slow=30"]))
    (job, *_rest) = expand(spec, now=NOW).jobs
    assert job.params["fast"] == 10 and job.params["slow"] == 30
    bad = spec_from(strategies=("ma_crossover",), params=parse_params(["ma_crossover:fast=50,slow=10"]))
    with pytest.raises(ValidationError, match="fast < slow"):
        expand(bad, now=NOW)
    typo = spec_from(strategies=("ma_crossover",), params=parse_params(["ma_crossover:fastt=5"]))
    with pytest.raises(ValidationError, match="did you mean 'fast'"):
        expand(typo, now=NOW)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"strategies": ("momentumm",)}, "unknown strategy 'momentumm' (did you mean 'momentum'?)"),
        ({"granularity": "7m"}, "unknown granularity '7m'"),
        ({"capital": 0.0}, "--capital must be a positive finite number"),
        ({"capital": float("nan")}, "--capital must be a positive finite number, got nan"),
        ({"window": "40d", "days": 30}, "--window 40d is longer than the period"),
        ({"fee_bps": -1.0}, "--fee-bps must be in [0, 5000), got -1.0"),
    ],
)
def test_validation_errors(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        expand(spec_from(**flags), now=NOW)
    assert message in str(info.value)


def test_symbol_validation_hook_is_called() -> None:
    def reject(symbol: str) -> None:
        if symbol == "BTC-USDX":
            raise ValidationError("unknown product 'BTC-USDX' (did you mean 'BTC-USD'?)")

    with pytest.raises(ValidationError, match="did you mean 'BTC-USD'"):
        expand(spec_from(symbols=("BTC-USD", "BTC-USDX")), validate_symbol=reject, now=NOW)


def test_costs_and_source_change_job_ids() -> None:
    base = expand(SweepSpec(), now=NOW)
    cheaper = expand(spec_from(fee_bps=10.0), now=NOW)
    other = expand(spec_from(source="file"), now=NOW)
    assert not {j.job_id for j in base.jobs} & {j.job_id for j in cheaper.jobs}
    assert not {j.job_id for j in base.jobs} & {j.job_id for j in other.jobs}


def test_spec_file_toml_and_flag_override(tmp_path: Path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(
        'strategies = ["ma_crossover", "momentum"]\nsymbols = "BTC-USD,ETH-USD"\ndays = 7\n'
        "[params]\nma_crossover = [{fast = 5, slow = 20}, {fast = 10, slow = 40}]\n"
    )
    spec = spec_from(load_spec_file(path), symbols=("SOL-USD",))
    exp = expand(spec, now=NOW)
    assert {j.symbol for j in exp.jobs} == {"SOL-USD"}
    assert sorted((j.strategy, j.params.get("fast")) for j in exp.jobs)[:2] == [
        ("ma_crossover", 5),
        ("ma_crossover", 10),
    ]
    assert period(spec, NOW) == (TODAY - timedelta(days=7), TODAY)
    bad = tmp_path / "bad.toml"
    bad.write_text("strategy = ['momentum']\n")
    with pytest.raises(ConfigError, match="did you mean 'strategies'"):
        load_spec_file(bad)


def test_a_batch_carries_the_curves_choice_through_its_message() -> None:
    from backfarm.core.jobs import Batch, make_batches

    jobs = expand(SweepSpec(strategies=("momentum",), symbols=("BTC-USD",), grid=True, days=2)).jobs
    lean = make_batches(jobs, 10, curves=False)
    assert all(not b.curves for b in lean)
    assert all(Batch.from_dict(b.to_dict()) == b and not Batch.from_dict(b.to_dict()).curves for b in lean)
    full = make_batches(jobs, 10)
    assert "curves" not in full[0].to_dict()  # messages as before when curves are kept
    assert Batch.from_dict(full[0].to_dict()).curves
    assert lean[0].batch_id == full[0].batch_id  # the same jobs: the same batch
    with pytest.raises(TypeError, match="curves"):
        Batch.from_dict({**lean[0].to_dict(), "curves": "no"})
