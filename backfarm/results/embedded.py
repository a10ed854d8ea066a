"""The embedded result store: results in append-only Parquet parts, and a small SQLite index beside them.

A put encodes its records as one table (:mod:`backfarm.results.columns`) before taking any lock, then in one write
transaction decides which are new, duplicates or conflicts, and writes the new ones as one part (:mod:`backfarm.
results.parts`): its cost does not grow with the number of results stored. Parts are merged as they accumulate
(:mod:`backfarm.results.compaction`), so a query reads a few files. Rankings and aggregates read the identity and
metric columns only; a whole record (with its pictures) is read from its row group when one is asked for. Readers
(the dashboard, a second CLI) work while a sweep writes: each query sees one committed state.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from backfarm._util.ids import canonical_json
from backfarm.core.results import (
    AggregateRow,
    Conflict,
    Filters,
    PutReport,
    ResultRecord,
    SweepInfo,
    SweepRecord,
)
from backfarm.errors import ValidationError
from backfarm.results import columns, compaction, ranking
from backfarm.results.parts import Parts
from backfarm.results.store import ResultStore

CHUNK = 5000
"""Ids per ``IN (...)`` query (well below SQLite's bound-parameter limit)."""
PAGE = 500
"""Records per page when streaming results."""
AUTO_COMPACT_ROWS = 2**15
"""A put merges the smallest tiers itself, up to parts of this many rows; larger merges wait for
``backfarm store compact`` (they rewrite tens of megabytes)."""

# Progress in SQL: done = manifest jobs with a result; dead = manifest jobs given up on and still without a result.
_SWEEP = """SELECT s.sweep_id, s.created_at, s.spec, s.source,
    (SELECT COUNT(*) FROM manifest m WHERE m.sweep_id = s.sweep_id),
    (SELECT COUNT(*) FROM manifest m JOIN jobs j ON j.job_id = m.job_id WHERE m.sweep_id = s.sweep_id),
    (SELECT COUNT(*) FROM dead d JOIN manifest m ON m.sweep_id = d.sweep_id AND m.job_id = d.job_id
        WHERE d.sweep_id = s.sweep_id AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = d.job_id))
    FROM sweeps s"""
# A recomputation that disagrees again in the same way is one conflict, not one per delivery.
_CONFLICT = "INSERT OR IGNORE INTO conflicts (job_id, stored_hash, new_hash, at) VALUES (?,?,?,?)"

Located = dict[int, list[int]]
"""Rows to read: part → row numbers in it."""


class EmbeddedStore(ResultStore):
    """:class:`ResultStore` in a directory of Parquet parts and one SQLite index; safe to share between threads, and
    between processes on one machine (each opens its own)."""

    def __init__(self, root: Path, auto_compact: bool = True) -> None:
        self.parts = Parts(root)
        self.root = self.parts.root
        self.auto_compact = auto_compact
        """Merge the smallest parts after a put (the default; tests of the merge itself switch it off)."""

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.root)!r})"

    def close(self) -> None:
        """Close the index connection."""
        self.parts.close()

    # --- writing -------------------------------------------------------------------------------------------------

    def put(self, results: Sequence[ResultRecord] | pa.Table) -> PutReport:
        """Store ``results`` as one part (idempotent; conflicts recorded, originals kept)."""
        data = columns.as_table(results)  # encoded (every result hash computed) before the write lock is taken
        if data.num_rows == 0:
            return PutReport()
        ids = data.column("job_id").to_pylist()
        hashes = data.column("result_hash").to_pylist()
        now = time.time()
        with self.parts.transaction() as db:
            seen = self._hashes(db, set(ids))
            new: list[int] = []
            conflicts: list[tuple[str, str, str, float]] = []
            duplicates = 0
            for i, (job_id, new_hash) in enumerate(zip(ids, hashes, strict=True)):
                stored = seen.get(job_id)
                if stored is None:
                    seen[job_id] = new_hash
                    new.append(i)
                elif stored == new_hash:
                    duplicates += 1
                else:
                    conflicts.append((job_id, stored, new_hash, now))
            if new:
                rows = data if len(new) == len(ids) else data.take(new)
                part = self.parts.add(db, rows, now)
                db.executemany(
                    "INSERT INTO jobs (job_id, result_hash, part, row) VALUES (?,?,?,?)",
                    [(ids[i], hashes[i], part, row) for row, i in enumerate(new)],
                )
            db.executemany(_CONFLICT, conflicts)
        if new and self.auto_compact:
            compaction.compact(self.parts, max_rows=AUTO_COMPACT_ROWS)
        return PutReport(inserted=len(new), duplicates=duplicates, conflicts=len(conflicts))

    @staticmethod
    def _hashes(db: Any, job_ids: set[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        ids = sorted(job_ids)
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            sql = f"SELECT job_id, result_hash FROM jobs WHERE job_id IN ({','.join('?' * len(chunk))})"
            found.update(db.execute(sql, chunk).fetchall())
        return found

    # --- reading rows --------------------------------------------------------------------------------------------

    def get(self, job_id: str) -> ResultRecord | None:
        """One result by job id."""
        rows = self.parts.query("SELECT part, row FROM jobs WHERE job_id = ?", (job_id,))
        if not rows:
            return None
        return self._records({rows[0][0]: [rows[0][1]]})[0]

    def existing(self, job_ids: Iterable[str]) -> set[str]:
        """The subset of ``job_ids`` that already have a result."""
        with self.parts.lock:
            return set(self._hashes(self.parts.db, set(job_ids)))

    def _locate(self, db: Any, filters: Filters | None) -> Located | None:
        """The rows a sweep filter admits (``None``: every row of every visible part)."""
        if filters is None or filters.sweep is None:
            return None
        located: Located = defaultdict(list)
        sql = "SELECT j.part, j.row FROM manifest m JOIN jobs j ON j.job_id = m.job_id WHERE m.sweep_id = ?"
        for part, row in db.execute(sql, (filters.sweep,)):
            located[part].append(row)
        return located

    def scan(self, names: Sequence[str], filters: Filters | None = None) -> pa.Table:
        """Columns ``names`` of every result passing ``filters``, with ``_part`` and ``_row`` (where each is stored);
        in no particular order."""
        wanted = list(dict.fromkeys([*names, *_filter_columns(filters)]))
        with self.parts.snapshot() as db:
            located = self._locate(db, filters)
            parts = sorted(located) if located is not None else self.parts.visible(db)
        tables = [self.parts.read(part, wanted, located[part] if located is not None else None) for part in parts]
        data = pa.concat_tables(tables, promote_options="default") if tables else _empty(wanted)
        return _apply(data, filters)

    def _records(self, located: Located) -> list[ResultRecord]:
        """Whole records of the given rows, in the order given (part by part, rows as listed)."""
        out: list[ResultRecord] = []
        for part, rows in located.items():
            data = self.parts.read(part, columns.SCHEMA.names, rows)
            by_row = dict(zip(data.column("_row").to_pylist(), columns.records(data), strict=True))
            out.extend(by_row[row] for row in rows)
        return out

    # --- queries ---------------------------------------------------------------------------------------------------

    def top(
        self, metric: str, n: int, filters: Filters | None = None, ascending: bool | None = None
    ) -> list[ResultRecord]:
        """The best ``n`` results by ``metric``: defined values in order, then undefined ones by job id."""
        column = columns.metric_column(ranking.check_metric(metric))
        if ranking.check_limit(n) == 0:
            return []
        data = self.scan(["job_id", column], filters)
        order = "ascending" if ranking.is_ascending(metric, ascending) else "descending"
        values = data.column(column)
        ranked = data.filter(pc.is_valid(values)).sort_by([(column, order), ("job_id", "ascending")]).slice(0, n)
        if ranked.num_rows < n:
            undefined = data.filter(pc.is_null(values)).sort_by("job_id").slice(0, n - ranked.num_rows)
            ranked = pa.concat_tables([ranked, undefined], promote_options="default")
        wanted = list(zip(ranked.column("_part").to_pylist(), ranked.column("_row").to_pylist(), strict=True))
        located: Located = defaultdict(list)
        for part, row in wanted:
            located[part].append(row)
        found = {r.job_id: r for r in self._records(located)}
        return [found[job_id] for job_id in ranked.column("job_id").to_pylist()]

    def iter_results(self, filters: Filters | None = None) -> Iterator[ResultRecord]:
        """Every result passing ``filters``, ordered by job id, read a page at a time."""
        order = self.scan(["job_id"], filters).sort_by("job_id")
        parts, rows = order.column("_part").to_pylist(), order.column("_row").to_pylist()
        for i in range(0, order.num_rows, PAGE):
            located: Located = defaultdict(list)
            for part, row in zip(parts[i : i + PAGE], rows[i : i + PAGE], strict=True):
                located[part].append(row)
            page = {r.job_id: r for r in self._records(located)}
            yield from (page[job_id] for job_id in order.column("job_id").slice(i, PAGE).to_pylist())

    def aggregate(self, by: str, filters: Filters | None = None) -> list[AggregateRow]:
        """Summaries by ``strategy`` or ``symbol``, from the metric columns alone."""
        key = ranking.check_group(by)
        names = [columns.metric_column(m) for m in ("total_return", "sharpe", "max_drawdown", "trades", "wins")]
        data = self.scan([key, *names], filters)
        keys = data.column(key).cast(pa.string())
        return [
            _summary(value, data.filter(pc.equal(keys, value)), names) for value in sorted(pc.unique(keys).to_pylist())
        ]

    def count(self) -> tuple[int, int]:
        """(results stored, sweeps recorded)."""
        results, sweeps = self.parts.query("SELECT (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM sweeps)")[0]
        return int(results), int(sweeps)

    def conflicts(self) -> list[Conflict]:
        """Every recorded conflict, oldest first."""
        rows = self.parts.query("SELECT job_id, stored_hash, new_hash, at FROM conflicts ORDER BY id")
        return [Conflict(*row) for row in rows]

    # --- sweeps ----------------------------------------------------------------------------------------------------

    def create_sweep(self, sweep: SweepRecord) -> bool:
        """Record a sweep and its manifest; False (nothing changed) if the id exists."""
        with self.parts.transaction() as db:
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
        with self.parts.transaction() as db:
            if db.execute("SELECT 1 FROM sweeps WHERE sweep_id = ?", (sweep_id,)).fetchone() is None:
                raise ValidationError(f"unknown sweep '{sweep_id}'")
            db.executemany(
                "INSERT INTO dead (sweep_id, job_id, reason, at) VALUES (?,?,?,?) "
                "ON CONFLICT (sweep_id, job_id) DO UPDATE SET reason = excluded.reason, at = excluded.at",
                [(sweep_id, job_id, reason, now) for job_id in ids],
            )

    def pending(self, sweep_id: str) -> list[str]:
        """Expected job ids of a sweep that are neither done nor dead, sorted."""
        rows = self.parts.query(
            "SELECT m.job_id FROM manifest m WHERE m.sweep_id = ? "
            "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = m.job_id) "
            "AND NOT EXISTS (SELECT 1 FROM dead d WHERE d.sweep_id = m.sweep_id AND d.job_id = m.job_id) "
            "ORDER BY m.job_id",
            (sweep_id,),
        )
        return [row[0] for row in rows]

    def dead(self, sweep_id: str) -> dict[str, str]:
        """Dead job ids of a sweep with their reasons."""
        rows = self.parts.query("SELECT job_id, reason FROM dead WHERE sweep_id = ? ORDER BY job_id", (sweep_id,))
        return dict(rows)

    def manifest(self, sweep_id: str) -> list[str]:
        """The expected job ids of a sweep, sorted."""
        rows = self.parts.query("SELECT job_id FROM manifest WHERE sweep_id = ? ORDER BY job_id", (sweep_id,))
        return [row[0] for row in rows]

    def sweep(self, sweep_id: str) -> SweepInfo | None:
        """One sweep with its progress; a unique prefix of the id is accepted."""
        if not sweep_id:
            return None
        candidates = self.parts.query(
            "SELECT sweep_id FROM sweeps WHERE sweep_id = ? OR substr(sweep_id, 1, ?) = ? ORDER BY sweep_id LIMIT 6",
            (sweep_id, len(sweep_id), sweep_id),
        )
        found = ranking.match_prefix(sweep_id, [row[0] for row in candidates])
        if found is None:
            return None
        return _sweep_info(self.parts.query(_SWEEP + " WHERE s.sweep_id = ?", (found,))[0])

    def sweeps(self) -> list[SweepInfo]:
        """All sweeps, newest first (ties by id)."""
        return [_sweep_info(row) for row in self.parts.query(_SWEEP + " ORDER BY s.created_at DESC, s.sweep_id")]


def _filter_columns(filters: Filters | None) -> list[str]:
    if filters is None:
        return []
    return [name for name in columns.FILTER_COLUMNS if getattr(filters, name) is not None]


def _apply(data: pa.Table, filters: Filters | None) -> pa.Table:
    """Rows of ``data`` whose filter fields equal ``filters``' (the sweep is already applied)."""
    for name in _filter_columns(filters):
        data = data.filter(pc.equal(data.column(name).cast(pa.string()), getattr(filters, name)))
    return data


def _empty(names: Sequence[str]) -> pa.Table:
    schema = pa.schema([columns.SCHEMA.field(n) for n in names] + [("_part", pa.int64()), ("_row", pa.int64())])
    return schema.empty_table()


def _summary(key: str, group: pa.Table, names: list[str]) -> AggregateRow:
    """One group's aggregate (see :class:`AggregateRow`), with exactly rounded sums (order does not matter)."""
    total_return, sharpe, drawdown, trades, wins = (group.column(n).drop_null().to_pylist() for n in names)
    trade_count, win_count = int(sum(trades)), int(sum(wins))
    return AggregateRow(
        key=key,
        results=group.num_rows,
        mean_return=math.fsum(total_return) / len(total_return) if total_return else None,
        mean_sharpe=math.fsum(sharpe) / len(sharpe) if sharpe else None,
        worst_drawdown=float(min(drawdown)) if drawdown else None,
        trades=trade_count,
        win_rate=win_count / trade_count if trade_count else None,
    )


def _sweep_info(row: Sequence[Any]) -> SweepInfo:
    sweep_id, created_at, spec, source, total, done, dead = row
    return SweepInfo(sweep_id, created_at, json.loads(spec), source, total, done, dead)
