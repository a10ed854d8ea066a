"""Merging the facts of small parts of the embedded store into larger ones, so a query reads a few files however many
commits wrote them (the pictures stay where their commit wrote them: they are read one record at a time).

Parts fall into size tiers (:data:`TIERS`, in rows). Once :data:`FANIN` parts of one tier exist, they are merged into
one part of a higher tier, so every result is rewritten a few times at most and a million results live in a few dozen
files. Parts of :data:`MAX_ROWS` rows or more are never merged again.

A merge holds the index's write lock only to claim its parts and, at the end, to point their rows at the new part;
reading and writing the files happens outside it, so writers are not held up. Claims expire (a merger that died
leaves its parts to the next one). Replaced files are deleted after :data:`GRACE_S`, so a reader that listed them
before the merge can still read them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from backfarm.results.partfiles import FACTS_ZSTD, write_part
from backfarm.results.parts import VISIBLE, Parts

FANIN = 8
"""Parts of one tier merged at a time."""
TIERS: tuple[int, ...] = (2**12, 2**15, 2**18)
"""Upper bounds (rows) of the tiers: a part below ``TIERS[k]`` and at or above ``TIERS[k - 1]`` is in tier ``k``."""
MAX_ROWS = TIERS[-1]
"""Parts this large are final."""
CLAIM_TTL_S = 600.0
"""A claim older than this belongs to a merger that died: the parts are free again."""
GRACE_S = 300.0
"""Replaced part files are deleted this long after the merge that replaced them."""


@dataclass
class CompactionReport:
    """What a compaction did."""

    merges: int = 0
    parts_merged: int = 0
    rows: int = 0
    files_deleted: int = 0


def tier(rows: int) -> int:
    """The size tier of a part of ``rows`` rows (``len(TIERS)`` for final parts)."""
    return next((k for k, bound in enumerate(TIERS) if rows < bound), len(TIERS))


def compact(parts: Parts, max_rows: int = MAX_ROWS, until_done: bool = True) -> CompactionReport:
    """Merge tiers that have :data:`FANIN` parts or more, smallest first (merges that would exceed ``max_rows`` rows
    are left for later); then delete files replaced long enough ago. ``until_done``: keep merging while there is
    something to merge, else one merge at most. Looking costs one read of the parts table: a store with nothing to
    merge or delete takes no write lock."""
    report = CompactionReport()
    while _mergeable(parts.query(_FREE, (time.time() - CLAIM_TTL_S,)), max_rows):
        claimed = _claim(parts, max_rows)
        if not claimed:
            break  # another process claimed them first
        report.rows += _merge(parts, claimed)
        report.merges += 1
        report.parts_merged += len(claimed)
        if not until_done:
            break
    now = time.time()
    if parts.query(_GARBAGE + " LIMIT 1", (now - GRACE_S, now - CLAIM_TTL_S)):
        report.files_deleted = _collect(parts)
    return report


_FREE = f"SELECT part, rows FROM parts WHERE {VISIBLE} AND (claimed_at IS NULL OR claimed_at < ?) ORDER BY part"
"""Parts a merge may take: visible, and not claimed by a live merger."""
_GARBAGE = "SELECT part FROM parts WHERE retired_at < ? OR (bytes = 0 AND created_at < ?)"
"""Parts whose files can go: replaced long enough ago, or reserved by a merger that died."""


def _mergeable(free: list[tuple[int, int]], max_rows: int) -> list[tuple[int, int]]:
    """The oldest :data:`FANIN` parts of the smallest tier that has that many (within ``max_rows``), or none."""
    tiers: dict[int, list[tuple[int, int]]] = {}
    for part, count in free:
        tiers.setdefault(tier(count), []).append((part, count))
    for level in sorted(tiers):
        group = tiers[level][:FANIN]
        if level < len(TIERS) and len(group) == FANIN and sum(n for _, n in group) <= max_rows:
            return group
    return []


def _claim(parts: Parts, max_rows: int) -> list[tuple[int, int]]:
    """Claim what :func:`_mergeable` picks, in one write transaction (so two mergers never take the same parts)."""
    now = time.time()
    with parts.transaction() as db:
        group = _mergeable(db.execute(_FREE, (now - CLAIM_TTL_S,)).fetchall(), max_rows)
        db.executemany("UPDATE parts SET claimed_at = ? WHERE part = ?", [(now, p) for p, _ in group])
    return group


def _merge(parts: Parts, claimed: list[tuple[int, int]]) -> int:
    """Write the claimed parts as one new part and point their rows at it; the rows merged."""
    merged = pa.concat_tables([pq.read_table(parts.facts(part)) for part, _ in claimed], promote_options="default")
    with parts.transaction() as db:
        target = parts.reserve(db, merged.num_rows, time.time())
    size = write_part(parts.facts(target), merged, FACTS_ZSTD)  # outside the lock: not visible yet
    moves = [(target, row, job_id) for row, job_id in enumerate(merged.column("job_id").to_pylist())]
    with parts.transaction() as db:
        # Every row of a part is indexed to it (parts only ever hold new results), so the job ids say what moves.
        db.executemany("UPDATE jobs SET part = ?, row = ? WHERE job_id = ?", moves)
        parts.publish(db, target, size)
        db.executemany("UPDATE parts SET retired_at = ? WHERE part = ?", [(time.time(), p) for p, _ in claimed])
    return int(merged.num_rows)


def _collect(parts: Parts) -> int:
    """Delete the files of parts retired more than :data:`GRACE_S` ago, and of parts a dead merger reserved and
    never wrote, and forget those parts; how many."""
    now = time.time()
    with parts.transaction() as db:
        gone = [row[0] for row in db.execute(_GARBAGE, (now - GRACE_S, now - CLAIM_TTL_S))]
        db.executemany("DELETE FROM parts WHERE part = ?", [(p,) for p in gone])
    for part in gone:
        parts.facts(part).unlink(missing_ok=True)  # its pictures stay: rows elsewhere still point to them
    return len(gone)
