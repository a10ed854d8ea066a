"""The embedded result store: results in append-only Parquet parts, and a small SQLite index beside them.

A put encodes its records as one table (:mod:`backfarm.results.columns`) before taking any lock, then in one write
transaction decides which are new, duplicates or conflicts, and writes the new ones as one part (:mod:`backfarm.
results.partfiles`): its cost does not grow with the number of results stored. Parts are merged as they accumulate
(:mod:`backfarm.results.compaction`), so a query reads a few files. Queries are :class:`~backfarm.results.reader.
EmbeddedReader`'s: rankings and aggregates read the identity and metric columns only, a whole record (with its
pictures) is read from its row groups when one is asked for, and readers work while a sweep writes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from backfarm._util.ids import canonical_json
from backfarm.core.results import Filters, PutReport, ResultRecord, SweepRecord
from backfarm.errors import ValidationError
from backfarm.results import columns, compaction, completion, partfiles, rows
from backfarm.results.reader import PAGE, EmbeddedReader
from backfarm.results.store import ResultStore

AUTO_COMPACT_ROWS = 2**15
"""A put merges the smallest tiers itself, up to parts of this many rows; larger merges wait for
``backfarm store compact`` (they rewrite tens of megabytes)."""

# A recomputation that disagrees again in the same way is one conflict, not one per delivery.
_CONFLICT = "INSERT OR IGNORE INTO conflicts (job_id, stored_hash, new_hash, at) VALUES (?,?,?,?)"


class EmbeddedStore(EmbeddedReader, ResultStore):
    """:class:`ResultStore` in a directory of Parquet parts and one SQLite index; safe to share between threads, and
    between processes on one machine (each opens its own)."""

    def __init__(self, root: Path, auto_compact: bool = True) -> None:
        super().__init__(root)
        self.auto_compact = auto_compact
        """Merge the smallest parts after a put (the default; tests of the merge itself switch it off)."""

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
                part = partfiles.add(self.parts, db, rows, now)
                db.executemany(
                    "INSERT INTO jobs (job_id, result_hash, part, row) VALUES (?,?,?,?)",
                    [(ids[i], hashes[i], part, row) for row, i in enumerate(new)],
                )
            db.executemany(_CONFLICT, conflicts)
        if new and self.auto_compact:
            compaction.compact(self.parts, max_rows=AUTO_COMPACT_ROWS)
        return PutReport(inserted=len(new), duplicates=duplicates, conflicts=len(conflicts))

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

    def incomplete(self, filters: Filters | None = None) -> Iterator[tuple[object, list[ResultRecord]]]:
        """Backtest results stored without their moments and daily returns, a part at a time (the unit
        :meth:`fill_in` rewrites), in pages."""
        with self.parts.snapshot() as db:
            if filters is None or filters.sweep is None:
                wanted: dict[int, list[int] | None] = dict.fromkeys(self.parts.visible(db))
            else:
                sql = "SELECT j.part, j.row FROM manifest m JOIN jobs j ON j.job_id = m.job_id WHERE m.sweep_id = ?"
                by_part: dict[int, list[int]] = {}
                for part, row in db.execute(sql, (filters.sweep,)):
                    by_part.setdefault(part, []).append(row)
                wanted = dict(by_part)
        for part in sorted(wanted):
            path = self.parts.facts(part)
            if not path.exists():
                continue  # merged into another part (and deleted) since the snapshot: a rerun finds its rows there
            params: dict[str, object] = {"file": str(path)}
            where = self._where(filters, params)
            conditions = [where.removeprefix("WHERE ")] if where else []
            conditions.append("kind = 'backtest'")
            if _MEAN in pq.read_schema(path).names:
                conditions.append(f'"{_MEAN}" IS NULL')
            if wanted[part] is not None:
                params["rows"] = wanted[part]
                conditions.append("file_row_number IN (SELECT unnest($rows))")
            sql = (
                f"SELECT * FROM read_parquet($file, file_row_number = true) WHERE {' AND '.join(conditions)} "
                "ORDER BY file_row_number LIMIT $n OFFSET $offset"
            )
            offset = 0
            while page := self.duck.named(sql, {**params, "n": PAGE, "offset": offset}):
                yield part, [rows.record(row) for row in page]
                offset += len(page)

    def fill_in(self, results: Sequence[ResultRecord] | pa.Table) -> int:
        """Rewrite the parts holding results that lack their moments and daily returns, once each
        (:mod:`backfarm.results.completion`)."""
        return completion.fill_in(self.parts, columns.as_table(results))


_MEAN = rows.moment_column("mean")
