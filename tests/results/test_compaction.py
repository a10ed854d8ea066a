"""The embedded store's upkeep: merging parts (without losing or duplicating a result, while others read), and
migrating a store of the old single-file format, from the command line too."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfarm.cli import app
from backfarm.core.results import Filters, PutReport
from backfarm.results import compaction
from backfarm.results.embedded import EmbeddedStore
from backfarm.results.legacy import LegacyStore, migrate
from tests.results.contract import make_record, sweep_record

runner = CliRunner()


def _files(store: EmbeddedStore) -> list[Path]:
    return sorted(store.parts.dir.glob("*.facts.parquet"))


def _put_in_parts(store: EmbeddedStore, parts: int, rows: int, prefix: str = "j") -> list[str]:
    ids = []
    for p in range(parts):
        batch = [make_record(f"{prefix}{p:03d}-{i:04d}", sharpe=(p * rows + i) % 97 / 10) for i in range(rows)]
        assert store.put(batch) == PutReport(inserted=rows)
        ids += [r.job_id for r in batch]
    return ids


def test_eight_small_parts_become_one_and_every_result_reads_the_same(tmp_path: Path) -> None:
    with closing(EmbeddedStore(tmp_path / "results", auto_compact=False)) as store:
        ids = _put_in_parts(store, 8, 300)
        before = {r.job_id: r for r in store.iter_results()}
        top = store.top("sharpe", 25)
        assert store.parts.totals() == (8, 2400, store.parts.totals()[2])
        report = compaction.compact(store.parts)
        assert (report.merges, report.parts_merged, report.rows) == (1, 8, 2400)
        assert store.parts.totals()[:2] == (1, 2400)
        assert {r.job_id: r for r in store.iter_results()} == before and sorted(before) == sorted(ids)
        assert store.top("sharpe", 25) == top
        assert all(store.get(job_id) == before[job_id] for job_id in ids[::97])
        assert len(_files(store)) == 9  # the replaced facts stay for readers that listed them...
        assert store.put([before[ids[0]]]) == PutReport(duplicates=1)  # ...and the index says where each result is


def test_replaced_files_are_deleted_after_the_grace_period(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with closing(EmbeddedStore(tmp_path / "results", auto_compact=False)) as store:
        _put_in_parts(store, 8, 10)
        compaction.compact(store.parts)
        assert len(_files(store)) == 9
        monkeypatch.setattr(compaction, "GRACE_S", -1.0)
        assert compaction.compact(store.parts).files_deleted == 8
        assert len(_files(store)) == 1 and sum(1 for _ in store.iter_results()) == 80


def test_a_reader_that_listed_parts_before_a_merge_still_reads_them(tmp_path: Path) -> None:
    root = tmp_path / "results"
    with closing(EmbeddedStore(root, auto_compact=False)) as writer, closing(EmbeddedStore(root)) as reader:
        _put_in_parts(writer, 8, 50)
        with reader.parts.snapshot() as db:
            listed = reader.parts.visible(db)
        compaction.compact(writer.parts)  # another process merges meanwhile
        files = [str(reader.parts.facts(part)) for part in listed]
        assert reader.duck.rows("SELECT count(*) FROM read_parquet($files)", {"files": files}) == [(400,)]


def test_tiers_merge_upward_and_a_claimed_part_is_left_alone(tmp_path: Path) -> None:
    with closing(EmbeddedStore(tmp_path / "results", auto_compact=False)) as store:
        _put_in_parts(store, 7, 5)
        assert compaction.compact(store.parts).merges == 0  # seven of a tier: nothing to do yet
        with store.parts.transaction() as db:
            first = store.parts.visible(db)[0]
            db.execute("UPDATE parts SET claimed_at = ? WHERE part = ?", (1e12, first))  # a live merger holds it
        _put_in_parts(store, 1, 5, prefix="k")
        assert compaction.compact(store.parts).merges == 0  # eight parts, but one is claimed
        _put_in_parts(store, 1, 5, prefix="m")
        report = compaction.compact(store.parts)
        assert report.merges == 1 and report.parts_merged == 8
        retired = dict(store.parts.query("SELECT part, retired_at FROM parts"))
        assert retired[first] is None  # the claimed part was not taken
        assert store.parts.totals()[:2] == (2, 45)  # the claimed part and the merged one


def test_puts_merge_small_parts_as_they_go(tmp_path: Path) -> None:
    with closing(EmbeddedStore(tmp_path / "results")) as store:
        _put_in_parts(store, 20, 25)
        parts, rows, _ = store.parts.totals()
        assert rows == 500 and parts < compaction.FANIN  # never eight of the smallest tier left lying around
        assert sum(1 for _ in store.iter_results()) == 500


# --- migrating the old single-file store -------------------------------------------------------------------------


def _old_store(path: Path) -> list[str]:
    with closing(LegacyStore(path)) as old:
        records = [make_record(f"o{i:04d}", sharpe=i / 100, strategy=("a", "b")[i % 2]) for i in range(1200)]
        old.put(records)
        old.create_sweep(sweep_record("s1", tuple(r.job_id for r in records[:600]), grid="x"))
        old.create_sweep(sweep_record("s2", ("o0700", "o0701", "gone"), created_at=200.0))
        old.mark_dead("s2", "gone", "never ran")
        old.put([make_record("o0003", sharpe=99.0)])  # a conflict
        return [r.job_id for r in records]


def test_migration_copies_everything_and_keeps_the_old_file(tmp_path: Path) -> None:
    old_path = tmp_path / "results.sqlite"
    ids = _old_store(old_path)
    with closing(LegacyStore(old_path)) as old:
        expected = {
            "results": list(old.iter_results()),
            "sweeps": old.sweeps(),
            "dead": old.dead("s2"),
            "conflicts": old.conflicts(),
            "top": old.top("sharpe", 20, Filters(sweep="s1", strategy="a")),
            "by": old.aggregate("strategy"),
        }
    seen: list[tuple[int, int]] = []
    with closing(EmbeddedStore(tmp_path / "results")) as new:
        report = migrate(old_path, new, lambda done, total: seen.append((done, total)))
        assert (report.results, report.sweeps, report.dead, report.conflicts) == (1200, 2, 1, 1)
        assert list(new.iter_results()) == expected["results"] and len(ids) == 1200
        assert new.sweeps() == expected["sweeps"]
        assert new.dead("s2") == expected["dead"] and new.conflicts() == expected["conflicts"]
        assert new.top("sharpe", 20, Filters(sweep="s1", strategy="a")) == expected["top"]
        assert new.aggregate("strategy") == expected["by"]
    assert seen[-1] == (1200, 1200)
    assert not old_path.exists() and report.kept_as.exists() and report.kept_as.name == "results.sqlite.migrated"


def test_an_interrupted_migration_runs_again_to_the_same_store(tmp_path: Path) -> None:
    old_path = tmp_path / "results.sqlite"
    _old_store(old_path)
    with closing(EmbeddedStore(tmp_path / "results")) as new:
        with closing(LegacyStore(old_path)) as old:
            new.put(list(old.iter_results())[:700])  # as far as a first run got
        report = migrate(old_path, new)
        assert report.results == 1200 and new.count() == (1200, 2)


def test_the_cli_asks_for_a_migration_then_does_it_and_compacts(tmp_path: Path) -> None:
    env = {"BACKFARM_DATA_DIR": str(tmp_path), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}
    _old_store(tmp_path / "results.sqlite")
    refused = runner.invoke(app, ["leaderboard", "--all"], env=env)
    assert refused.exit_code == 2 and "backfarm store migrate" in refused.stderr
    done = runner.invoke(app, ["store", "migrate"], env=env)
    assert done.exit_code == 0, done.stderr
    assert "migrated 1,200 results, 2 sweeps, 1 dead job and 1 conflict" in done.stdout
    board = runner.invoke(app, ["leaderboard", "--all", "--top", "3", "--format", "json"], env=env)
    assert board.exit_code == 0
    assert [row["job_id"] for row in json.loads(board.stdout)] == ["o1199", "o1198", "o1197"]  # the original o0003 kept
    info = runner.invoke(app, ["store", "info"], env=env)
    assert info.exit_code == 0 and "1,200 results in 1 part file " in info.stdout and "2 sweeps" in info.stdout
    again = runner.invoke(app, ["store", "migrate"], env=env)
    assert again.exit_code == 0 and "nothing to migrate" in again.stdout
    compacted = runner.invoke(app, ["store", "compact"], env=env)
    assert compacted.exit_code == 0 and "1 part file → 1" in compacted.stdout
