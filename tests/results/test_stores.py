"""Every result store against the shared contract, plus what only one store has to prove.

The contract tests (``tests/results/contract.py``) run once per store through the parametrized ``store`` fixture.
Store-specific tests: SQLite's WAL, single transaction and indexed ranking; Redis' atomic batch across a ``kill -9``,
one-line errors without the password, key prefix, pending jobs and the farm's ledger; for both, two processes putting
the same results at once.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
import redis
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from backfarm._util.connection import RedisConnection
from backfarm.cli import app
from backfarm.config import Settings
from backfarm.core.results import METRICS, MOMENTS, Filters, PutReport, ResultRecord
from backfarm.errors import AuthError, ConfigError, ServiceUnavailable
from backfarm.farm.ledger import Ledger
from backfarm.results import columns, compaction, packed, partfiles, ranking, rows
from backfarm.results.embedded import EmbeddedStore
from backfarm.results.factory import open_store
from backfarm.results.legacy import LegacyStore
from backfarm.results.redis_store import RedisStore
from backfarm.results.store import ResultStore
from tests.redis_server import RedisServer, free_port
from tests.results.contract import *  # noqa: F403 - the contract tests, collected once per store
from tests.results.contract import make_record, sweep_record

Opener = Callable[[], ResultStore]


@pytest.fixture(params=["embedded", "redis", "legacy"])
def store_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens (another handle on) one store: the embedded directory, a clean database on the test Redis, or the old
    single SQLite file (still read by migrations)."""
    if request.param == "embedded":
        return lambda: EmbeddedStore(tmp_path / "results")
    if request.param == "legacy":
        return lambda: LegacyStore(tmp_path / "results.sqlite")
    url = request.getfixturevalue("redis_url")
    return lambda: RedisStore(url)


@pytest.fixture
def store(store_opener: Opener) -> Iterator[ResultStore]:
    """The store under contract test."""
    with store_opener() as opened:
        yield opened


# --- both stores: concurrent writers --------------------------------------------------------------------------------


def _put_from_child(opener: Opener, batches: list[list[ResultRecord]], go: object, out: object) -> None:
    with opener() as store:
        go.wait()  # type: ignore[attr-defined]
        reports = [store.put(batch) for batch in batches]
    out.put([(r.inserted, r.duplicates, r.conflicts) for r in reports])  # type: ignore[attr-defined]


def test_concurrent_puts_from_two_processes_keep_one_copy(store_opener: Opener) -> None:
    records = [make_record(f"job{i:04d}", sharpe=(i % 97) / 10, win_rate=None if i % 5 else 0.5) for i in range(1000)]
    batches = [records[i : i + 50] for i in range(0, len(records), 50)]
    ctx = multiprocessing.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    children = [
        ctx.Process(target=_put_from_child, args=(store_opener, order, go, out))
        for order in (batches, [b[::-1] for b in reversed(batches)])
    ]
    for child in children:
        child.start()
    go.set()
    results = [out.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    totals = [sum(col) for col in zip(*(row for result in results for row in result), strict=True)]
    assert totals == [1000, 1000, 0]  # every record inserted exactly once, the other copy a duplicate
    with store_opener() as store:
        stored = sorted(store.iter_results(), key=lambda r: r.job_id)
        assert stored == records  # each once, whole
        assert [r.job_id for r in store.top("win_rate", 1000)][:200] == [r.job_id for r in records[::5]]
        assert store.conflicts() == []
        if isinstance(store, RedisStore):
            client = store.conn.client
            assert client.scard(store.keys.done) == client.hlen(store.keys.jobs) == 1000


# --- the old single-file store ---------------------------------------------------------------------------------------


def test_sqlite_uses_wal_and_shares_the_file(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with closing(LegacyStore(path)) as first, closing(LegacyStore(path)) as second:
        assert first._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        first.put([make_record("a")])
        assert second.get("a") == make_record("a")
        assert second.create_sweep(sweep_record("s1", ("a",)))
        assert first.sweep("s1") is not None


def test_sqlite_put_is_one_transaction(tmp_path: Path) -> None:
    """2,000 results in one write transaction (its speed is the benchmark's business: ``backfarm bench``)."""
    records = [make_record(f"{i:06d}", sharpe=i / 1000) for i in range(2000)]
    with closing(LegacyStore(tmp_path / "results.sqlite")) as store:
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        assert store.put(records) == PutReport(inserted=2000)
        store._db.set_trace_callback(None)
        assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
        assert store.put(records) == PutReport(duplicates=2000)


def test_sqlite_top_is_an_indexed_order_by(tmp_path: Path) -> None:
    with closing(LegacyStore(tmp_path / "results.sqlite")) as store:
        for metric in METRICS:
            for ascending in (None, True, False):
                plans: list[str] = []
                store._db.set_trace_callback(plans.append)
                store.top(metric, 5, ascending=ascending)
                store._db.set_trace_callback(None)
                ranked = plans[0]
                detail = " ".join(row[3] for row in store._db.execute("EXPLAIN QUERY PLAN " + ranked))
                assert f"USING INDEX results_m_{metric}" in detail, detail
                assert "TEMP B-TREE FOR ORDER BY" not in detail  # at most ties are sorted, never the whole table


def test_sqlite_unusable_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open the result store"):
        LegacyStore(tmp_path)  # a directory
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError):
        LegacyStore(tmp_path / "junk.sqlite")


def test_open_store_picks_the_embedded_store_without_redis(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "nested" / "data")
    with open_store(settings) as store:
        assert isinstance(store, EmbeddedStore)
        assert store.root == settings.store_path
        assert (settings.store_path / "index.sqlite").exists()


def test_an_old_single_file_store_asks_for_a_migration(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with LegacyStore(settings.legacy_store_path) as old:
        old.put([make_record("a")])
    with pytest.raises(ConfigError, match=r"results.sqlite\); convert them once with `backfarm store migrate`"):
        open_store(settings)
    assert settings.legacy_store_path.exists() and not settings.store_path.exists()  # nothing touched


def test_open_store_picks_redis_when_configured(redis_url: str, tmp_path: Path) -> None:
    with open_store(Settings(data_dir=tmp_path, redis_url=redis_url)) as store:
        assert isinstance(store, RedisStore)
    assert not (tmp_path / "results.sqlite").exists()


# --- embedded -----------------------------------------------------------------------------------------------------


def _parts(store: EmbeddedStore) -> list[Path]:
    return sorted(store.parts.dir.glob("*.facts.parquet"))


def test_embedded_put_is_one_part_and_one_transaction(tmp_path: Path) -> None:
    """2,000 results in one write transaction and one part file; a second put of them writes nothing."""
    records = [make_record(f"{i:06d}", sharpe=i / 1000) for i in range(2000)]
    with closing(EmbeddedStore(tmp_path / "results")) as store:
        statements: list[str] = []
        store.parts.db.set_trace_callback(statements.append)
        assert store.put(records) == PutReport(inserted=2000)
        store.parts.db.set_trace_callback(None)
        assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
        assert len(_parts(store)) == 1
        assert store.put(records) == PutReport(duplicates=2000)
        assert len(_parts(store)) == 1
        half = [make_record(f"{i:06d}", sharpe=i / 1000) for i in range(1000, 3000)]
        assert store.put(half) == PutReport(inserted=1000, duplicates=1000)
        assert len(_parts(store)) == 2 and store.existing(r.job_id for r in half) == {r.job_id for r in half}


def test_embedded_readers_see_whole_commits_while_another_process_writes(tmp_path: Path) -> None:
    """A reader in this process counts results while a child process commits 40 batches of 50: every count it sees
    is a whole number of batches, and the top result is always one that is stored."""
    root = tmp_path / "results"
    EmbeddedStore(root).close()
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()

    def writer() -> None:
        with EmbeddedStore(root) as store:
            go.wait()
            for b in range(40):
                store.put([make_record(f"b{b:02d}-{i:02d}", sharpe=b + i / 100) for i in range(50)])

    child = ctx.Process(target=writer)
    child.start()
    seen: list[int] = []
    with EmbeddedStore(root) as reader:
        go.set()
        while child.is_alive() or not seen or seen[-1] < 2000:
            count = sum(row.results for row in reader.aggregate("strategy"))  # read from the part files
            assert count % 50 == 0, count
            best = reader.top("sharpe", 1)
            assert (not best and count == 0) or (best and reader.get(best[0].job_id) == best[0])
            seen.append(count)
            if count == 2000:
                break
    child.join(timeout=60)
    assert child.exitcode == 0 and seen[-1] == 2000


def test_embedded_an_uncommitted_part_file_is_invisible(tmp_path: Path) -> None:
    """A writer that died between writing its file and committing leaves a file no index row names: no reader sees
    it, and the next part to get its number replaces it."""
    with closing(EmbeddedStore(tmp_path / "results")) as store:
        store.put([make_record("a")])
        with store.parts.transaction() as db:  # a part written, then its writer died before the commit
            partfiles.add(store.parts, db, columns.table([make_record("ghost", sharpe=99.0)]), 0.0)
            db.execute("ROLLBACK")
            db.execute("BEGIN")
        assert store.parts.facts(2).exists() and store.parts.pictures(2).exists()
        assert store.get("ghost") is None and store.existing(["ghost"]) == set()
        assert [r.job_id for r in store.top("sharpe", 10)] == ["a"]
        store.put([make_record("b")])  # gets part 2: the orphan is overwritten
        assert [r.job_id for r in store.top("sharpe", 10)] == ["a", "b"] and store.get("ghost") is None


def test_embedded_records_read_back_from_the_right_row_groups(tmp_path: Path) -> None:
    """Parts larger than a row group: a record is read from its group, and sweep filters pick exact rows."""
    records = [make_record(f"{i:05d}", sharpe=(i * 37 % 1000) / 10, strategy=("a", "b")[i % 2]) for i in range(3000)]
    with closing(EmbeddedStore(tmp_path / "results")) as store:
        store.put(records)
        for i in (0, 1023, 1024, 2047, 2048, 2999):
            assert store.get(f"{i:05d}") == records[i]
        store.create_sweep(sweep_record("s", tuple(f"{i:05d}" for i in range(1000, 3000, 7))))
        picked = [r for i, r in enumerate(records) if 1000 <= i and (i - 1000) % 7 == 0]
        best = sorted(picked, key=lambda r: (-(r.metrics["sharpe"] or 0.0), r.job_id))[:5]
        assert store.top("sharpe", 5, Filters(sweep="s")) == best
        assert [r.job_id for r in store.iter_results(Filters(sweep="s", strategy="a"))] == sorted(
            r.job_id for r in picked if r.strategy == "a"
        )


NEW_FACTS = [rows.moment_column(m) for m in MOMENTS]
"""Columns that stores written by backfarm 0.2.0 lack (with the ``daily`` picture)."""


def _with_moments(record: ResultRecord) -> ResultRecord:
    daily = {"v": 1, "t0": 0, "k": 1, "data": "AAAAAAAA8D8="}  # one block, return 1.0
    return dataclasses.replace(
        record, moments={"mean": 0.5, "std": 0.25, "skew": 0.0, "kurt": 3.0}, extra={**record.extra, "daily": daily}
    )


def test_embedded_parts_written_before_the_moments_still_read(tmp_path: Path) -> None:
    """Part files without the moment columns and the daily picture (as backfarm 0.2.0 wrote them) read as results
    without them, alone, beside new parts, and merged with them."""
    with closing(EmbeddedStore(tmp_path / "results", auto_compact=False)) as store:
        old = [make_record(f"old{i}", sharpe=float(i)) for i in range(3)]
        store.put(old)
        for path in _parts(store):  # rewrite the part as 0.2.0 did: no moment columns, no daily returns
            pq.write_table(pq.read_table(path).drop_columns(NEW_FACTS), path)
            pics = path.with_name(path.name.replace(".facts.", ".pictures."))
            pq.write_table(pq.read_table(pics).drop_columns(["daily"]), pics)
        assert "r_mean" not in pq.read_schema(_parts(store)[0]).names
        assert store.get("old1") == old[1] and store.top("sharpe", 1) == [old[2]]
        new = [_with_moments(make_record(f"new{i}", sharpe=10.0 + i)) for i in range(7)]
        for record in new:  # one part each: with the old one, a full tier of eight to merge
            store.put([record])
        everything = sorted(old + new, key=lambda r: -(r.metrics["sharpe"] or 0.0))
        assert store.top("sharpe", 10) == everything
        report = compaction.compact(store.parts)
        assert (report.merges, report.parts_merged, report.rows) == (1, 8, 10)
        assert store.top("sharpe", 10) == everything
        assert [r.job_id for r in store.iter_results()] == sorted(r.job_id for r in everything)
        assert store.get("old0") == old[0] and store.get("new6") == new[6]


def test_redis_chunks_written_before_the_moments_still_read(redis_url: str) -> None:
    """A chunk without the moment columns and the daily picture (as backfarm 0.2.0 wrote it) reads as results
    without them, beside chunks with them."""
    with closing(RedisStore(redis_url, prefix="oldchunk")) as store:
        old = [make_record(f"old{i}", sharpe=float(i)) for i in range(3)]
        store.put(old)
        client = redis.Redis.from_url(redis_url)
        (key,) = client.keys("oldchunk:chunk:*")
        facts = packed.facts(client.hget(key, "facts"))
        for name in NEW_FACTS:
            del facts[name]
        raw = zstandard.ZstdDecompressor().decompress(client.hget(key, "pictures"))
        (size,) = packed._HEADER.unpack_from(raw)
        header = orjson.loads(raw[packed._HEADER.size : packed._HEADER.size + size])
        del header["daily"]
        head = orjson.dumps(header)
        old_pictures = packed._HEADER.pack(len(head)) + head + raw[packed._HEADER.size + size :]
        compress = zstandard.ZstdCompressor().compress
        client.hset(key, mapping={"facts": compress(orjson.dumps(facts)), "pictures": compress(old_pictures)})
        new = [_with_moments(make_record("new", sharpe=10.0))]
        store.put(new)
        assert store.top("sharpe", 4) == [new[0], old[2], old[1], old[0]]
        assert store.get("old1") == old[1] and list(store.iter_results()) != []


def test_embedded_unusable_path_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot open the result store"):
        EmbeddedStore(tmp_path / "file")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "index.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError):
        EmbeddedStore(tmp_path / "junk")


# --- Redis ----------------------------------------------------------------------------------------------------------


def test_unreachable_redis_is_one_line_without_password() -> None:
    port = free_port()
    url = f"redis://:hunter2-secret@127.0.0.1:{port}/0"
    for attempt in (lambda: RedisStore(url), lambda: open_store(Settings(redis_url=url))):
        with pytest.raises(ServiceUnavailable) as info:
            attempt()
        message = str(info.value)
        assert message.startswith(f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0")
        assert "\n" not in message
        shown = "".join(traceback.format_exception(info.value)) + repr(info.value)
        assert "hunter2" not in shown


def test_wrong_or_missing_password_is_an_auth_error(redis_server: RedisServer) -> None:
    good = redis_server.password
    assert good
    for url in (redis_server.url.replace(good, "wrong-pw"), f"redis://127.0.0.1:{redis_server.port}/0"):
        with pytest.raises(AuthError) as info:
            RedisStore(url)
        assert "\n" not in str(info.value)
        assert good not in str(info.value) and "wrong-pw" not in str(info.value)
    assert good not in repr(RedisStore(redis_server.url))


def test_redis_store_survives_a_restart_and_reports_outage(tmp_path: Path) -> None:
    with RedisServer(appendonly=True, appendfsync="always", directory=tmp_path / "redis") as server:
        store = RedisStore(server.url)
        store.put([make_record("a")])
        server.kill()
        with pytest.raises(ServiceUnavailable, match="cannot reach Redis"):
            store.get("a")
        server.restart()
        assert store.get("a") == make_record("a")  # same store object, reconnected


def _kill_when_busy(server: RedisServer, writer: threading.Thread) -> None:
    """SIGKILL the server while it runs a long script: found by a PING that gets no answer within 0.1 s."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as probe:
        probe.settimeout(0.1)
        while writer.is_alive():
            probe.sendall(b"PING\r\n")
            try:
                probe.recv(64)
            except TimeoutError:
                break  # the server is stuck in a command: the put script
    server.kill()


def test_redis_put_is_atomic_across_kill_and_restart(tmp_path: Path) -> None:
    with RedisServer(appendonly=True, appendfsync="always", directory=tmp_path / "redis") as server:
        store = RedisStore(server.url)
        first = [make_record(f"a{i:05d}") for i in range(100)]
        assert store.put(first).inserted == 100
        batch = [make_record(f"b{i:05d}", sharpe=i / 7, win_rate=None if i % 2 else 0.25) for i in range(8000)]
        outcome: dict[str, object] = {}

        def write() -> None:
            try:
                outcome["report"] = store.put(batch)
            except ServiceUnavailable as exc:
                outcome["error"] = exc

        writer = threading.Thread(target=write)
        writer.start()
        _kill_when_busy(server, writer)
        writer.join(timeout=60)
        server.restart()
        client = server.client()
        landed = len(store.existing(r.job_id for r in batch))
        assert landed in (0, len(batch)), f"partial batch: {landed} of {len(batch)}"
        assert store.existing(r.job_id for r in first) == {r.job_id for r in first}
        expected = 100 + landed
        chunks = 1 + (landed > 0)  # a chunk is stored with its rows' done marks, or not at all
        assert client.scard(store.keys.done) == client.hlen(store.keys.jobs) == expected
        assert client.scard(store.keys.chunks) == client.zcard(store.keys.bounds("sharpe", False)) == chunks
        assert client.scard(store.keys.cindex("strategy", "momentum")) == chunks
        assert client.scard(store.keys.znull("win_rate")) == chunks - 1  # only the big batch has undefined ones
        # The re-delivered batch completes it, and a third delivery changes nothing.
        assert store.put(batch) == PutReport(inserted=len(batch) - landed, duplicates=landed)
        assert store.put(batch) == PutReport(duplicates=len(batch))
        assert client.scard(store.keys.done) == client.hlen(store.keys.jobs) == 100 + len(batch)
        assert client.scard(store.keys.chunks) == 2  # a delivery with nothing new stores no chunk
        assert [r.job_id for r in store.top("sharpe", 3)] == [
            b.job_id for b in sorted(batch, key=lambda r: -r.metrics["sharpe"])[:3]
        ]
        client.close()
        store.close()


def test_redis_keys_live_under_the_prefix(redis_url: str) -> None:
    with (
        closing(RedisStore(redis_url, prefix="bf-test")) as store,
        closing(RedisStore(redis_url, prefix="other")) as other,
    ):
        store.put([make_record("a", sharpe=None)])
        store.create_sweep(sweep_record("s1", ("a", "b")))
        store.mark_dead("s1", "b", "boom")
        Ledger(store.conn, prefix="bf-test").attempt("s1", "b")  # the farm's own keys share the prefix
        store.put([make_record("a", sharpe=2.0)])  # a conflict
        keys = list(store.conn.client.scan_iter(match="*"))
        assert keys and all(k.startswith("bf-test:") for k in keys)
        assert other.get("a") is None and other.sweeps() == [] and other.conflicts() == []
    with pytest.raises(ConfigError):
        RedisStore(redis_url, prefix="has space")


def test_redis_pending_and_the_farm_ledger(redis_url: str) -> None:
    with closing(RedisStore(redis_url)) as store:
        assert store.conn.ping() >= 0
        ledger = Ledger(store.conn)
        store.create_sweep(sweep_record("s1", ("j1", "j2", "j3", "j4")))
        store.put([make_record("j1"), make_record("other")])
        assert ledger.attempt("s1", "j2") == 1
        assert ledger.attempt("s1", "j2") == 2
        assert ledger.attempt("s1", "j3") == 1
        assert ledger.attempts("s1") == {"j2": 2, "j3": 1}
        assert ledger.attempt_many("s1", ["j2", "j5", "j5"]) == [3, 1, 2]  # in order, each counted once per mention
        assert ledger.attempt_many("s1", []) == []
        assert ledger.attempts("s1") == {"j2": 3, "j3": 1, "j5": 2}
        assert ledger.prior("s1", ["j2", "j4"]) == (False, [3, 0])
        store.mark_dead("s1", "j3", "too many attempts")
        assert store.existing(["j1", "j2", "other"]) == {"j1", "other"}
        assert store.pending("s1") == ["j2", "j4"]
        store.put([make_record("j4")])
        assert store.pending("s1") == ["j2"]
        assert store.pending("unknown") == []
        ledger.cancel("s1", "cancelled for the test")
        assert ledger.is_cancelled("s1") and ledger.prior("s1", ["j2"]) == (True, [3])
        assert not ledger.is_cancelled("other")


def test_redis_server_helper_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="apt-get install redis-server"):
        RedisServer()
    monkeypatch.undo()
    with pytest.raises(ValueError, match="6379"):
        RedisServer(port=6379)


def test_redis_client_is_configured(redis_url: str) -> None:
    with RedisConnection(redis_url, socket_timeout=7.0, health_check_interval=11) as conn:
        store = RedisStore(conn)
        kwargs = store.conn.client.connection_pool.connection_kwargs
        assert kwargs["decode_responses"] is True
        assert (kwargs["socket_timeout"], kwargs["health_check_interval"]) == (7.0, 11)
        assert kwargs["socket_connect_timeout"] == 5.0
        assert isinstance(store.conn.client, redis.Redis)
        store.close()  # a store given a connection leaves it open for its owner
        assert store.get("nothing") is None


def test_an_interrupted_query_is_a_keyboard_interrupt(tmp_path: Path) -> None:
    """Ctrl-C while DuckDB runs a query ends a command with exit 130 like anywhere else, not as a crash: DuckDB's own
    report of the interruption comes out as KeyboardInterrupt."""
    with EmbeddedStore(tmp_path / "results") as store:
        outcome: list[BaseException | None] = []

        def long_query() -> None:
            try:
                store.duck.rows("SELECT count(*) FROM range(100000000000)")  # minutes, unless interrupted
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - the test inspects what came out
                outcome.append(exc)

        worker = threading.Thread(target=long_query)
        worker.start()
        deadline = time.monotonic() + 60
        while worker.is_alive() and time.monotonic() < deadline:
            store.duck.interrupt()  # until the query has started and stopped
            worker.join(timeout=0.05)
        assert not worker.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], KeyboardInterrupt)


def test_redis_results_of_the_old_layout_are_refused_until_migrated(redis_url: str) -> None:
    """A farm's Redis written by backfarm 0.1 (a hash per result, a sorted set of job ids per metric, a set per
    filter value) is refused with the command that converts it; `backfarm store migrate` moves every result into
    chunks, keeps sweeps, progress and conflicts, removes the old keys, and a second run has nothing to do."""
    records = [make_record(f"old{i:04d}", sharpe=None if i % 7 == 0 else i / 10) for i in range(2500)]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    pipe = client.pipeline()
    for r in records:  # what the 0.1 store wrote for each result
        pipe.hset(f"backfarm:result:{r.job_id}", mapping={"json": ranking.record_json(r), "hash": r.result_hash})
        if r.metrics["sharpe"] is None:
            pipe.sadd("backfarm:nulls:sharpe", r.job_id)
        else:
            pipe.zadd("backfarm:board:sharpe", {r.job_id: r.metrics["sharpe"]})
        pipe.sadd("backfarm:index:strategy:momentum", r.job_id)
        pipe.sadd("backfarm:done", r.job_id)
    pipe.execute()
    with closing(RedisStore(redis_url, check_layout=False)) as store:
        store.create_sweep(sweep_record("s-old", tuple(r.job_id for r in records[:100])))
    with pytest.raises(ConfigError, match="backfarm store migrate"):
        RedisStore(redis_url)
    env = {"BACKFARM_REDIS_URL": redis_url, "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["store", "migrate"], env=env)
    assert result.exit_code == 0, result.output
    assert "migrated 2,500 results" in result.stdout
    with closing(RedisStore(redis_url)) as store:
        assert sorted(store.iter_results(), key=lambda r: r.job_id) == records
        assert store.top("sharpe", 3) == sorted(records, key=lambda r: -(r.metrics["sharpe"] or -1))[:3]
        info = store.sweep("s-old")
        assert info is not None and info.done == 100
        assert not list(client.scan_iter("backfarm:result:*")) and not client.exists("backfarm:board:sharpe")
    again = CliRunner().invoke(app, ["store", "migrate"], env=env)
    assert again.exit_code == 0 and "nothing to migrate" in again.stdout
    client.close()


@settings(max_examples=500, deadline=None)
@given(
    a=st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False)),
    b=st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False)),
)
def test_chunk_bounds_sort_as_their_values_do(a: float, b: float) -> None:
    """The text keys the Redis store ranks chunks by compare as the numbers do, either way round (-0.0 ties 0.0)."""
    for asc in (True, False):
        ka, kb = packed.sort_key(a, asc), packed.sort_key(b, asc)
        assert len(ka) == len(kb) == 16
        if float(a) == float(b):
            assert ka == kb
        else:
            assert (ka < kb) == ((float(a) < float(b)) == asc)


def test_redis_ranks_ties_across_many_chunks_by_job_id(redis_url: str) -> None:
    """Thousands of results tied at the top value in dozens of commits: the top N is decided by job id exactly (the
    chunk bounds carry the job id of their best row)."""
    with closing(RedisStore(redis_url)) as store:
        rng = random.Random(3)
        records = [make_record(f"t{rng.randrange(10**9):09d}", sharpe=0.0, trades=5) for _ in range(3000)]
        records += [make_record(f"u{i:04d}", sharpe=-1.0 - i, trades=rng.randrange(5)) for i in range(500)]
        rng.shuffle(records)
        for i in range(0, len(records), 100):
            store.put(records[i : i + 100])
        for metric in ("sharpe", "trades"):
            expected = ranking.rank(records, metric, 7)
            assert [r.job_id for r in store.top(metric, 7, pictures=False)] == [r.job_id for r in expected]
        assert [r.job_id for r in store.top("sharpe", 3, ascending=True)] == ["u0499", "u0498", "u0497"]
