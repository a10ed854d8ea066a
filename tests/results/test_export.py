"""Exporting a sweep to Parquet and CSV: every result once, the same values, typed parameter columns, pages, and no
half-written file when writing fails."""

from __future__ import annotations

import csv
import math
from contextlib import closing
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from backfarm.core.results import METRICS
from backfarm.errors import ConfigError, ValidationError
from backfarm.results import export
from backfarm.results.embedded import EmbeddedStore
from tests.results.contract import make_record, sweep_record


def _store(tmp_path: Path) -> EmbeddedStore:
    store = EmbeddedStore(tmp_path / "results")
    records = [make_record(f"m{i:03d}", params={"lookback": 10 + i, "threshold": 0.5}, sharpe=i / 7) for i in range(23)]
    records += [
        make_record(f"x{i:03d}", strategy="ma_crossover", params={"fast": 5, "slow": 20 + i}, sharpe=None)
        for i in range(9)
    ]
    store.put(records)
    store.put([make_record("other", sharpe=9.0)])  # stored, but not in the sweep
    ids = tuple(r.job_id for r in records)
    store.create_sweep(sweep_record("s1", ids, strategies=["momentum", "ma_crossover"]))
    return store


def test_parquet_export_streams_every_result_once_with_typed_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "PAGE", 5)  # several pages, the last one short
    with closing(_store(tmp_path)) as store:
        out = tmp_path / "s1.parquet"
        assert export.export_sweep(store, "s1", out) == 32
        table = pq.read_table(out)
        expected = {r.job_id: r for r in store.iter_results()}
    assert table.num_rows == 32 and sorted(table.column("job_id").to_pylist())[0] == "m000"
    assert "other" not in table.column("job_id").to_pylist()
    types = {f.name: str(f.type) for f in table.schema}
    assert types["lookback"] == types["fast"] == types["slow"] == types["trades"] == "int64"
    assert types["threshold"] == types["sharpe"] == "double"
    for row in table.to_pylist():
        record = expected[row["job_id"]]
        assert all(row[m] == record.metrics[m] for m in METRICS)
        assert {k: row[k] for k in record.params} == record.params
        other = {"lookback", "threshold"} if record.strategy == "ma_crossover" else {"fast", "slow"}
        assert all(row[k] is None for k in other)
    assert not list(tmp_path.glob(".*.tmp"))


def test_csv_export_has_the_same_rows(tmp_path: Path) -> None:
    with closing(_store(tmp_path)) as store:
        out = tmp_path / "s1.csv"
        export.export_sweep(store, "s1", out)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 32 and rows[0]["job_id"] == "m000"
    assert float(rows[1]["sharpe"]) == pytest.approx(1 / 7) and rows[1]["lookback"] == "11"
    assert rows[-1]["sharpe"] == "" and rows[-1]["slow"] == "28"
    assert not math.isnan(float(rows[0]["capital"]))


def test_a_failed_export_leaves_no_file(tmp_path: Path) -> None:
    with closing(_store(tmp_path)) as store:
        missing = tmp_path / "no-such-dir" / "out.parquet"
        with pytest.raises(ConfigError, match="cannot write"):
            export.export_sweep(store, "s1", missing)
        with pytest.raises(ValidationError, match="unknown sweep"):
            export.export_sweep(store, "nope", tmp_path / "x.parquet")
    assert not missing.exists() and not (tmp_path / "x.parquet").exists()
