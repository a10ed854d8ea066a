"""Completing results stored without their moments and daily returns (as backfarm before 0.3 stored them): once,
from their own fields, checked against their hashes, on the embedded store and on Redis, and through the CLI."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from backfarm.cli import app
from backfarm.config import Settings
from backfarm.core.results import MOMENTS, Filters, ResultRecord, SweepRecord
from backfarm.execution.complete import complete, job_of
from backfarm.results import rows
from backfarm.results.embedded import EmbeddedStore
from backfarm.results.redis_store import RedisStore
from backfarm.results.store import ResultStore

SWEEP = ("backtest", "--grid", "--strategies", "momentum,breakout", "--symbols", "BTC-USD,ETH-USD", "--days", "3",
         "--granularity", "1h", "--source", "synthetic", "--workers", "1")  # fmt: skip
OLD_FACTS = [rows.moment_column(m) for m in MOMENTS]


def _bare(record: ResultRecord) -> ResultRecord:
    """``record`` as backfarm 0.2.0 stored it: no moments, no daily returns."""
    return dataclasses.replace(record, moments={}, extra={k: v for k, v in record.extra.items() if k != "daily"})


def _as_old_parts(store: EmbeddedStore) -> None:
    """Rewrite every part file of ``store`` as backfarm 0.2.0 wrote them (no moment columns, no daily picture)."""
    for facts in store.parts.dir.glob("*.facts.parquet"):
        pq.write_table(pq.read_table(facts).drop_columns(OLD_FACTS), facts)
    for pics in store.parts.dir.glob("*.pictures.parquet"):
        pq.write_table(pq.read_table(pics).drop_columns(["daily"]), pics)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, ResultRecord], str]:
    """A small real sweep (its data directory, its results with their statistics, its sweep id)."""
    data = tmp_path_factory.mktemp("fresh")
    result = CliRunner().invoke(app, list(SWEEP), env={"BACKFARM_DATA_DIR": str(data), "BACKFARM_REDIS_URL": ""})
    assert result.exit_code == 0, result.output
    with closing(EmbeddedStore(data / "results")) as store:
        records = {r.job_id: r for r in store.iter_results()}
        (sweep,) = store.sweeps()
    assert len(records) > 20 and all(r.moments and "daily" in r.extra for r in records.values())
    return data, records, sweep.sweep_id


@pytest.fixture(params=["embedded", "redis"])
def old_store(
    request: pytest.FixtureRequest, fresh: tuple[Path, dict[str, ResultRecord], str], tmp_path: Path
) -> Iterator[tuple[ResultStore, Settings]]:
    """A store holding the sweep's results as backfarm 0.2.0 stored them, and settings that find its candles."""
    data, records, _ = fresh
    bare = [_bare(r) for r in records.values()]
    if request.param == "embedded":
        store: ResultStore = EmbeddedStore(tmp_path / "results", auto_compact=False)
        half = len(bare) // 2
        store.put(bare[:half])
        store.put(bare[half:])  # two parts
        _as_old_parts(store)  # type: ignore[arg-type]
    else:
        store = RedisStore(request.getfixturevalue("redis_url"))
        for i in range(0, len(bare), 10):
            store.put(bare[i : i + 10])  # several chunks
    with closing(store):
        yield store, Settings(data_dir=data)


def test_results_are_completed_once_and_exactly(
    old_store: tuple[ResultStore, Settings], fresh: tuple[Path, dict[str, ResultRecord], str]
) -> None:
    store, settings = old_store
    _, records, _ = fresh
    assert sum(len(page) for _, page in store.incomplete()) == len(records)
    seen: list[int] = []
    report = complete(store, settings, on_progress=seen.append)
    assert (report.found, report.completed, report.other_version, report.disagreed, report.failed) == (
        len(records), len(records), 0, 0, 0,
    )  # fmt: skip
    assert sum(seen) == len(records)
    assert {r.job_id: r for r in store.iter_results()} == records  # as a fresh run stores them, every field equal
    assert list(store.incomplete()) == []
    again = complete(store, settings)
    assert (again.found, again.completed) == (0, 0)
    assert store.conflicts() == []


def test_a_sweep_filter_completes_only_that_sweep_and_what_cannot_be_completed_is_left_as_it_is(
    old_store: tuple[ResultStore, Settings], fresh: tuple[Path, dict[str, ResultRecord], str]
) -> None:
    store, settings = old_store
    _, records, _ = fresh
    ids = sorted(records)
    mine = ids[:5]
    model = next(records[i] for i in ids if records[i].metrics["fees_paid"])  # it traded: fees scale with capital
    job = job_of(model)
    assert job is not None
    # Fields that hash to their id but metrics a recomputation does not give: twice the capital, the same metrics
    # (its fees would double). And fields that hash to another id: made by another version.
    doubled = dataclasses.replace(job, capital=2 * job.capital, job_id="")
    forged = dataclasses.replace(_bare(model), capital=doubled.capital, job_id=doubled.job_id)
    alien = dataclasses.replace(_bare(model), job_id="0" * 16)
    store.put([forged, alien])
    store.create_sweep(SweepRecord("part-of-it", 1.0, {}, (*mine, forged.job_id, alien.job_id), "synthetic"))
    report = complete(store, settings, Filters(sweep="part-of-it"))
    assert (report.found, report.completed, report.other_version, report.disagreed, report.failed) == (7, 5, 1, 1, 0)
    assert [c.job_id for c in store.conflicts()] == [forged.job_id]
    assert store.get(forged.job_id) == forged and store.get(alien.job_id) == alien  # left as they were
    assert {r.job_id for r in store.iter_results() if r.moments} == set(mine)
    rest = complete(store, settings)
    assert (rest.found, rest.completed) == (len(records) - 5 + 2, len(records) - 5)


def test_the_cli_completes_an_old_embedded_store(fresh: tuple[Path, dict[str, ResultRecord], str]) -> None:
    data, records, sweep_id = fresh
    env = {"BACKFARM_DATA_DIR": str(data), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}
    with closing(EmbeddedStore(data / "results")) as store:
        _as_old_parts(store)
        assert all(not r.moments for r in store.iter_results())
    result = CliRunner().invoke(app, ["store", "complete", "--sweep", sweep_id[:8]], env=env)
    assert result.exit_code == 0, result.output
    assert f"completed {len(records):,} of {len(records):,} results" in result.stdout
    with closing(EmbeddedStore(data / "results")) as store:
        assert {r.job_id: r for r in store.iter_results()} == records
    again = CliRunner().invoke(app, ["store", "complete"], env=env)
    assert again.exit_code == 0 and "completed 0 of 0 results" in again.stdout
    unknown = CliRunner().invoke(app, ["store", "complete", "--sweep", "nope"], env=env)
    assert unknown.exit_code == 2 and "no sweep 'nope'" in unknown.stderr
