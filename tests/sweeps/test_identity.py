"""The store's identity, pinned: job ids, the sweep id, result hashes and metrics of one fixed sweep.

Job ids and result hashes are what every stored result is found and checked by: a change that moves them makes every
stored result unreachable or a conflict. They may change only with a version bump an issue asks for (engine,
strategy interface, result hash); this test then gets new values in the same commit, and says which version moved.
The values below were computed for engine version 1 and strategy interface version 1.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfarm.candles.memo import CandleMemo
from backfarm.config import Settings
from backfarm.core.costs import Costs
from backfarm.core.jobs import Job
from backfarm.execution.runner import run_job
from backfarm.sweeps.expand import expand
from backfarm.sweeps.spec import SweepSpec

SPEC = SweepSpec(
    strategies=("momentum", "mean_reversion", "breakout", "ma_crossover", "volatility"),
    symbols=("BTC-USD", "ETH-USD"),
    granularity="1h",
    days=None,
    start="2024-01-01",
    end="2024-03-01",
    window="30d",
    step="15d",
    params={"ma_crossover": [{"fast": 5, "slow": 20}, {"fast": 10, "slow": 50}]},
    fee_bps=25.0,
    spread_bps=4.0,
    stop_loss_bps=300.0,
    capital=5000.0,
    source="synthetic",
)
SWEEP_ID = "f277bbb487794b92"
JOBS = 36
ALL_IDS_AND_HASHES = "727b6716169419c2717690dc09935913"
"""BLAKE2b-128 of every ``job_id:result_hash`` line, in expansion order."""
EXAMPLES = {
    # job id: (result hash, sharpe, total_return, trades)
    "de3b2f39a951da2340704449": ("74a4df46671a3d5cd8896b6d8625ec46", -10.0542566397, -0.128154052222, 11),
    "6703edda97a13173df386e49": ("9ac989943479a62eaef8a0f579582419", 4.38404891848, 0.0788152949069, 8),
    "b13b5c87f70a8ca1d811584b": ("d10154501eb1c1d576f684bb77dee1da", None, 0.0, 0),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, str, dict[str, float | int | None]]]:
    expansion = expand(SPEC, now=datetime(2026, 12, 1, tzinfo=UTC))
    assert expansion.sweep_id == SWEEP_ID
    memo = CandleMemo(Settings(data_dir=Path(tmp_path_factory.mktemp("identity"))))
    out = []
    for job in expansion.jobs:
        candles, indicators = memo.get(job.data_key)
        record = run_job(job, candles, indicators, curves=job.symbol == "ETH-USD")  # curves never enter the hash
        out.append((job.job_id, record.result_hash, record.metrics))
    return out


def test_job_ids_and_result_hashes_are_pinned(results: list[tuple[str, str, dict[str, float | int | None]]]) -> None:
    assert len(results) == JOBS
    lines = "\n".join(f"{job_id}:{result_hash}" for job_id, result_hash, _ in results)
    assert hashlib.blake2b(lines.encode(), digest_size=16).hexdigest() == ALL_IDS_AND_HASHES


def test_example_metrics_are_pinned(results: list[tuple[str, str, dict[str, float | int | None]]]) -> None:
    found = {job_id: (result_hash, metrics) for job_id, result_hash, metrics in results}
    for job_id, (result_hash, sharpe, total_return, trades) in EXAMPLES.items():
        stored_hash, metrics = found[job_id]
        assert stored_hash == result_hash
        assert metrics["sharpe"] == sharpe
        assert metrics["total_return"] == total_return
        assert metrics["trades"] == trades


@settings(max_examples=300, deadline=None)
@given(
    params=st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False)),
        max_size=5,
    )
)
def test_ids_made_from_a_shared_template_are_the_ids_of_the_jobs(params: dict[str, int | float]) -> None:
    """Expansion builds ids from the template text of a (symbol, window, strategy) with each parameter set in its
    slot: for any keys (escapes, non-ASCII) and values (huge ints, -0.0, tiny and huge floats) they are the ids a Job
    computes from its own identity."""
    template = Job("momentum", "1", {"lookback": 10}, "BTC-USD", "1m", "2026-01-01T00:00:00Z",
                   "2026-02-01T00:00:00Z", "synthetic", Costs(), 10_000.0)  # fmt: skip
    assert Job.id_maker(template)(params) == dataclasses.replace(template, params=params, job_id="").job_id


def test_whole_number_costs_are_the_same_costs_as_floats() -> None:
    """``Costs(fee_bps=10)`` (Python) and ``--fee-bps 10`` (the CLI gives 10.0) are one job, not two."""
    as_int, as_float = Costs(fee_bps=10, stop_loss_bps=150), Costs(fee_bps=10.0, stop_loss_bps=150.0)
    assert as_int == as_float and as_int.to_dict() == as_float.to_dict()
    assert all(isinstance(v, float) for v in as_int.to_dict().values() if v is not None)
    job = Job("momentum", "1", {"lookback": 5}, "BTC-USD", "1h", "2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z",
              "synthetic", as_int, 10_000.0)  # fmt: skip
    assert job.job_id == dataclasses.replace(job, costs=as_float, job_id="").job_id
