"""The first embedded result store (``results.sqlite``, one row per result): read by ``backfarm store migrate``.

Stores of this format are no longer written; :mod:`backfarm.results.embedded` replaced it (a row per result with 22
indexes made every insert slower as the file grew). It keeps the full store contract, so a migration reads it as
any store is read.

Layout: ``results`` holds one row per job (the record JSON, its ``result_hash``, one indexed column per filter field
and one per metric, so a top-N is an indexed ``ORDER BY ... LIMIT``); ``sweeps`` + ``manifest`` hold submitted sweeps
and their expected job ids; ``dead`` holds given-up jobs with reasons; ``conflicts`` holds recomputations that
disagreed with a stored result. The database runs in WAL mode with a busy timeout, so several processes (CLI, local
pool, a second CLI) can open it at once; every write is one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from backfarm._util.ids import canonical_json
from backfarm._util.sqlite import write_transaction
from backfarm.core.results import (
    METRICS,
    AggregateRow,
    Conflict,
    Filters,
    PutReport,
    ResultRecord,
    SweepInfo,
    SweepRecord,
)
from backfarm.errors import ConfigError, ValidationError
from backfarm.results import columns, ranking
from backfarm.results.embedded import EmbeddedStore
from backfarm.results.store import ResultStore

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
"""How long a write waits for another process's write transaction before giving up."""
WAL_CHECKPOINT_PAGES = 8192
"""Pages (4 KiB) the write-ahead log may grow to before a commit checkpoints it into the database file."""
PAGE = 500
"""Rows per page when streaming results (keyset pagination: no read transaction stays open between pages)."""
CHUNK = 5000
"""Job ids per ``IN (...)`` query (well below SQLite's bound-parameter limit)."""

FILTER_COLUMNS: dict[str, str] = {
    "strategy": "strategy",
    "symbol": "symbol",
    "granularity": "granularity",
    "start": "win_start",
    "end": "win_end",
    "source": "source",
    "kind": "kind",
}
"""Filter field → column of ``results`` (``start``/``end`` are SQL keywords)."""


def metric_column(metric: str) -> str:
    """The ``results`` column holding ``metric`` (validated, so it is safe to put in SQL text)."""
    return f"m_{ranking.check_metric(metric)}"


def _schema() -> list[str]:
    filters = ", ".join(f"{col} TEXT NOT NULL" for col in FILTER_COLUMNS.values())
    metrics = ", ".join(f"{metric_column(m)} REAL" for m in METRICS)
    statements = [
        f"""CREATE TABLE IF NOT EXISTS results (
            job_id TEXT NOT NULL UNIQUE, result_hash TEXT NOT NULL, record TEXT NOT NULL, {filters}, {metrics})""",
        """CREATE TABLE IF NOT EXISTS sweeps (
            sweep_id TEXT PRIMARY KEY, created_at REAL NOT NULL, spec TEXT NOT NULL, source TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS manifest (
            sweep_id TEXT NOT NULL, job_id TEXT NOT NULL, PRIMARY KEY (sweep_id, job_id)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS dead (
            sweep_id TEXT NOT NULL, job_id TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL,
            PRIMARY KEY (sweep_id, job_id)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS conflicts (
            id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, stored_hash TEXT NOT NULL,
            new_hash TEXT NOT NULL, at REAL NOT NULL, UNIQUE (job_id, new_hash))""",
        "CREATE INDEX IF NOT EXISTS sweeps_by_age ON sweeps (created_at DESC, sweep_id)",
    ]
    for col in FILTER_COLUMNS.values():
        statements.append(f"CREATE INDEX IF NOT EXISTS results_{col} ON results ({col})")
    for m in METRICS:
        # One index per metric in its own best-first direction; job_id in the index settles ties without a sort.
        direction = "" if ranking.is_ascending(m) else " DESC"
        col = metric_column(m)
        statements.append(f"CREATE INDEX IF NOT EXISTS results_{col} ON results ({col}{direction}, job_id)")
    return statements


class LegacyStore(ResultStore):
    """:class:`ResultStore` in one SQLite file; one connection per instance, safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            self._setup()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot open the result store {self.path}: {exc}") from None

    def _setup(self) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        db.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: committed transactions survive a process crash; only an OS crash can lose the last few.
        db.execute("PRAGMA synchronous = NORMAL")
        # Checkpoint the WAL every ~32 MiB instead of every 4 MiB: each checkpoint syncs the database file, and a
        # sweep's results (with their artifacts) write tens of MiB, so the default spends most of a put waiting.
        db.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        with self._write():
            for statement in _schema():
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (see :func:`write_transaction`)."""
        with write_transaction(self._db, self._lock, f"the result store {self.path}") as db:
            yield db

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    # --- results -------------------------------------------------------------------------------------------------

    def put(self, results: Sequence[ResultRecord] | pa.Table) -> PutReport:
        """Store ``results`` in one transaction (idempotent; conflicts recorded, originals kept)."""
        if isinstance(results, pa.Table):
            results = columns.records(results)
        rows = [_row(record) for record in results]  # encoded before the write lock is taken
        if not rows:
            return PutReport()
        inserted: list[tuple[Any, ...]] = []
        conflicts: list[tuple[str, str, str, float]] = []
        duplicates = 0
        now = time.time()
        with self._write() as db:
            known = self._hashes(db, {row[0] for row in rows})
            for row in rows:
                job_id, new_hash = row[0], row[1]
                stored = known.get(job_id)
                if stored is None:
                    known[job_id] = new_hash
                    inserted.append(row)
                elif stored == new_hash:
                    duplicates += 1
                else:
                    conflicts.append((job_id, stored, new_hash, now))
            db.executemany(_INSERT, inserted)
            db.executemany(_CONFLICT, conflicts)
        return PutReport(inserted=len(inserted), duplicates=duplicates, conflicts=len(conflicts))

    @staticmethod
    def _hashes(db: sqlite3.Connection, job_ids: set[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        ids = sorted(job_ids)
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            sql = f"SELECT job_id, result_hash FROM results WHERE job_id IN ({','.join('?' * len(chunk))})"
            found.update(db.execute(sql, chunk).fetchall())
        return found

    def get(self, job_id: str) -> ResultRecord | None:
        """One result by job id."""
        rows = self._query("SELECT record FROM results WHERE job_id = ?", (job_id,))
        return ResultRecord.from_json(rows[0][0]) if rows else None

    def existing(self, job_ids: Iterable[str]) -> set[str]:
        """The subset of ``job_ids`` that already have a result."""
        with self._lock:
            return set(self._hashes(self._db, set(job_ids)))

    def conflicts(self) -> list[Conflict]:
        """Every recorded conflict, oldest first."""
        rows = self._query("SELECT job_id, stored_hash, new_hash, at FROM conflicts ORDER BY id")
        return [Conflict(*row) for row in rows]

    # --- queries ---------------------------------------------------------------------------------------------------

    def top(
        self,
        metric: str,
        n: int,
        filters: Filters | None = None,
        ascending: bool | None = None,
        pictures: bool = True,
    ) -> list[ResultRecord]:
        """The best ``n`` results by ``metric``: defined values in order, then undefined ones by job id."""
        col = metric_column(metric)
        if ranking.check_limit(n) == 0:
            return []
        order = "ASC" if ranking.is_ascending(metric, ascending) else "DESC"
        source, where, params = _where(filters)
        ranked = self._query(
            f"SELECT r.record FROM {source} WHERE {where} AND r.{col} IS NOT NULL "
            f"ORDER BY r.{col} {order}, r.job_id LIMIT ?",
            [*params, n],
        )
        if len(ranked) < n:
            ranked += self._query(
                f"SELECT r.record FROM {source} WHERE {where} AND r.{col} IS NULL ORDER BY r.job_id LIMIT ?",
                [*params, n - len(ranked)],
            )
        found = [ResultRecord.from_json(row[0]) for row in ranked]
        return found if pictures else [ranking.bare(r) for r in found]

    def iter_results(self, filters: Filters | None = None) -> Iterator[ResultRecord]:
        """Every result passing ``filters``, ordered by job id, read page by page."""
        source, where, params = _where(filters)
        after = ""
        while True:
            page = self._query(
                f"SELECT r.job_id, r.record FROM {source} WHERE {where} AND r.job_id > ? ORDER BY r.job_id LIMIT ?",
                [*params, after, PAGE],
            )
            for _, record in page:
                yield ResultRecord.from_json(record)
            if len(page) < PAGE:
                return
            after = page[-1][0]

    def aggregate(self, by: str, filters: Filters | None = None) -> list[AggregateRow]:
        """Summaries by ``strategy`` or ``symbol``, from the metric columns (no record decoding)."""
        key = FILTER_COLUMNS[ranking.check_group(by)]
        source, where, params = _where(filters)
        cols = ", ".join(f"r.{metric_column(m)}" for m in ("total_return", "sharpe", "max_drawdown", "trades", "wins"))
        rows = self._query(f"SELECT r.{key}, {cols} FROM {source} WHERE {where}", params)
        return ranking.aggregate_rows(rows)

    # --- sweeps ----------------------------------------------------------------------------------------------------

    def create_sweep(self, sweep: SweepRecord) -> bool:
        """Record a sweep and its manifest; False (nothing changed) if the id exists."""
        with self._write() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO sweeps (sweep_id, created_at, spec, source) VALUES (?,?,?,?)",
                (sweep.sweep_id, sweep.created_at, canonical_json(sweep.spec), sweep.source),
            )
            if cur.rowcount == 0:
                return False
            db.executemany(
                "INSERT OR IGNORE INTO manifest (sweep_id, job_id) VALUES (?,?)",
                [(sweep.sweep_id, job_id) for job_id in sweep.job_ids],
            )
        return True

    def mark_dead(self, sweep_id: str, job_ids: str | Sequence[str], reason: str) -> None:
        """Give up on ``job_ids`` (one id or several) in ``sweep_id`` (the latest reason wins)."""
        ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
        now = time.time()
        with self._write() as db:
            if db.execute("SELECT 1 FROM sweeps WHERE sweep_id = ?", (sweep_id,)).fetchone() is None:
                raise ValidationError(f"unknown sweep '{sweep_id}'")
            db.executemany(
                "INSERT INTO dead (sweep_id, job_id, reason, at) VALUES (?,?,?,?) "
                "ON CONFLICT (sweep_id, job_id) DO UPDATE SET reason = excluded.reason, at = excluded.at",
                [(sweep_id, job_id, reason, now) for job_id in ids],
            )

    def incomplete(self, filters: Filters | None = None) -> Iterator[tuple[object, list[ResultRecord]]]:
        """Not here: results are completed in the current layout, after ``backfarm store migrate``."""
        raise ConfigError(_CONVERT_FIRST)

    def fill_in(self, results: pa.Table) -> int:
        """Not here: results are completed in the current layout, after ``backfarm store migrate``."""
        raise ConfigError(_CONVERT_FIRST)

    def pending(self, sweep_id: str) -> list[str]:
        """Expected job ids of a sweep that are neither done nor dead, sorted."""
        rows = self._query(
            "SELECT m.job_id FROM manifest m WHERE m.sweep_id = ? "
            "AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = m.job_id) "
            "AND NOT EXISTS (SELECT 1 FROM dead d WHERE d.sweep_id = m.sweep_id AND d.job_id = m.job_id) "
            "ORDER BY m.job_id",
            (sweep_id,),
        )
        return [row[0] for row in rows]

    def dead(self, sweep_id: str) -> dict[str, str]:
        """Dead job ids of a sweep with their reasons."""
        rows = self._query("SELECT job_id, reason FROM dead WHERE sweep_id = ? ORDER BY job_id", (sweep_id,))
        return dict(rows)

    def manifest(self, sweep_id: str) -> list[str]:
        """The expected job ids of a sweep, sorted."""
        rows = self._query("SELECT job_id FROM manifest WHERE sweep_id = ? ORDER BY job_id", (sweep_id,))
        return [row[0] for row in rows]

    def sweep(self, sweep_id: str) -> SweepInfo | None:
        """One sweep with its progress; a unique prefix of the id is accepted."""
        if not sweep_id:
            return None
        candidates = self._query(
            "SELECT sweep_id FROM sweeps WHERE sweep_id = ? OR substr(sweep_id, 1, ?) = ? ORDER BY sweep_id LIMIT 6",
            (sweep_id, len(sweep_id), sweep_id),
        )
        found = ranking.match_prefix(sweep_id, [row[0] for row in candidates])
        if found is None:
            return None
        return _sweep_info(self._query(_SWEEP + " WHERE s.sweep_id = ?", (found,))[0])

    def sweeps(self) -> list[SweepInfo]:
        """All sweeps, newest first (ties by id)."""
        return [_sweep_info(row) for row in self._query(_SWEEP + " ORDER BY s.created_at DESC, s.sweep_id")]


_INSERT = (
    f"INSERT INTO results (job_id, result_hash, record, {', '.join(FILTER_COLUMNS.values())}, "
    f"{', '.join(metric_column(m) for m in METRICS)}) "
    f"VALUES ({', '.join('?' * (3 + len(FILTER_COLUMNS) + len(METRICS)))})"
)

# A recomputation that disagrees again in the same way is one conflict, not one per delivery.
_CONFLICT = "INSERT OR IGNORE INTO conflicts (job_id, stored_hash, new_hash, at) VALUES (?,?,?,?)"

# Progress in SQL: done = manifest jobs with a result; dead = manifest jobs given up on and still without a result.
_SWEEP = """SELECT s.sweep_id, s.created_at, s.spec, s.source,
    (SELECT COUNT(*) FROM manifest m WHERE m.sweep_id = s.sweep_id),
    (SELECT COUNT(*) FROM manifest m JOIN results r ON r.job_id = m.job_id WHERE m.sweep_id = s.sweep_id),
    (SELECT COUNT(*) FROM dead d JOIN manifest m ON m.sweep_id = d.sweep_id AND m.job_id = d.job_id
        WHERE d.sweep_id = s.sweep_id AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = d.job_id))
    FROM sweeps s"""


_CONVERT_FIRST = "this store has the format of backfarm before 0.2: convert it with `backfarm store migrate` first"


def _sweep_info(row: Sequence[Any]) -> SweepInfo:
    sweep_id, created_at, spec, source, total, done, dead = row
    return SweepInfo(sweep_id, created_at, json.loads(spec), source, total, done, dead)


def _row(record: ResultRecord) -> tuple[Any, ...]:
    """The ``results`` row of ``record`` (parameters of ``_INSERT``: job id, result hash, record JSON, filter and
    metric columns)."""
    filters = [getattr(record, name) for name in FILTER_COLUMNS]
    metrics = [None if ranking.is_null(v := record.metrics.get(m)) else v for m in METRICS]
    return (record.job_id, record.result_hash, ranking.record_json(record), *filters, *metrics)


def _where(filters: Filters | None) -> tuple[str, str, list[Any]]:
    """``(FROM clause, WHERE clause, parameters)`` for ``filters``; a sweep filter joins its manifest."""
    source, terms, params = "results r", ["1"], list[Any]()
    if filters is None:
        return source, "1", params
    if filters.sweep is not None:
        source = "results r JOIN manifest mf ON mf.job_id = r.job_id AND mf.sweep_id = ?"
        params.append(filters.sweep)
    for name, col in FILTER_COLUMNS.items():
        value = getattr(filters, name)
        if value is not None:
            terms.append(f"r.{col} = ?")
            params.append(value)
    return source, " AND ".join(terms), params


# --- migration ----------------------------------------------------------------------------------------------------

MIGRATE_BATCH = 5000
"""Results per put while migrating (one part each; the store merges them as it goes)."""


@dataclass(frozen=True)
class MigrationReport:
    """What a migration copied (and where the old file went)."""

    results: int
    sweeps: int
    dead: int
    conflicts: int
    kept_as: Path


def migrate(old: Path, new: EmbeddedStore, on_progress: Callable[[int, int], None] | None = None) -> MigrationReport:
    """Copy everything of the single-file store at ``old`` into ``new`` — results, sweeps with their manifests, dead
    jobs with their reasons and times, conflicts — then rename ``old`` to ``{name}.migrated`` (kept, never deleted).

    Safe to interrupt and run again: results already copied are duplicates, sweeps already recorded are skipped, and
    the old file is renamed only once everything is in the new store. ``on_progress(results copied, results in all)``.
    """
    source = LegacyStore(old)
    try:
        total = source._query("SELECT COUNT(*) FROM results")[0][0]
        copied = 0
        batch: list[ResultRecord] = []
        for record in source.iter_results():
            batch.append(record)
            if len(batch) == MIGRATE_BATCH:
                copied += _copy(new, batch, on_progress, copied, total)
                batch = []
        copied += _copy(new, batch, on_progress, copied, total)
        sweeps = source._query("SELECT sweep_id, created_at, spec, source FROM sweeps ORDER BY created_at, sweep_id")
        for sweep_id, created_at, spec, src in sweeps:
            job_ids = tuple(
                row[0] for row in source._query("SELECT job_id FROM manifest WHERE sweep_id = ?", (sweep_id,))
            )
            new.create_sweep(SweepRecord(sweep_id, created_at, json.loads(spec), job_ids, src))
        dead = source._query("SELECT sweep_id, job_id, reason, at FROM dead")
        conflicts = source._query("SELECT job_id, stored_hash, new_hash, at FROM conflicts ORDER BY id")
        with new.parts.transaction() as db:
            db.executemany(
                "INSERT INTO dead (sweep_id, job_id, reason, at) VALUES (?,?,?,?) "
                "ON CONFLICT (sweep_id, job_id) DO UPDATE SET reason = excluded.reason, at = excluded.at",
                dead,
            )
            db.executemany(_CONFLICT, conflicts)
    finally:
        source.close()  # checkpoints the write-ahead log into the file, so the file alone is the whole store
    kept = old.with_name(old.name + ".migrated")
    old.replace(kept)
    for suffix in ("-wal", "-shm"):
        Path(f"{old}{suffix}").unlink(missing_ok=True)
    return MigrationReport(copied, len(sweeps), len(dead), len(conflicts), kept)


def _copy(
    new: EmbeddedStore,
    batch: list[ResultRecord],
    on_progress: Callable[[int, int], None] | None,
    done: int,
    total: int,
) -> int:
    new.put(batch)
    if on_progress is not None:
        on_progress(done + len(batch), total)
    return len(batch)
