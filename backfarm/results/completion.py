"""Filling in, in the embedded store, what results stored before a column existed lack (the moments of the bar
returns and the daily returns): each part holding such results is rewritten once, copy-on-write, as a merge would.

A rewrite claims its part (so no merge or other rewrite takes it meanwhile), writes the part's facts again with the
moments filled in and, for the completed rows, a new pictures file holding their old pictures plus the daily
returns (streamed a few row groups at a time, so memory stays bounded whatever the part's size); then, in one write
transaction, it points the part's rows at the new part and retires the old one (deleted after the merges' grace
period, so a reader that listed it still reads it). Rows keep their order, so job ids move by part alone. Only rows
whose stored result hash equals the completion's, and that lack the moments, are touched.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from backfarm._util.disk import writing
from backfarm.core.results import MOMENTS
from backfarm.results import columns
from backfarm.results.compaction import CLAIM_TTL_S
from backfarm.results.partfiles import FACTS_ZSTD, PICTURES_ZSTD, ROW_GROUP, write_part
from backfarm.results.parts import VISIBLE, Parts
from backfarm.results.rows import PICTURES, moment_column

_MOMENT_COLUMNS = tuple(moment_column(m) for m in MOMENTS)
_ROUNDS = 3
"""Looks for the parts holding the results: a merge that moved some between a look and the claim sends the next
look to their new part."""


def fill_in(parts: Parts, table: pa.Table) -> int:
    """Give the stored results of ``table``'s rows (a table of :data:`backfarm.results.columns.SCHEMA`: the same
    jobs recomputed) the moments and daily returns they lack; how many results were filled in. Rows whose hash
    differs from the stored one, or whose stored result has them already, are left alone; a part another merge or
    rewrite holds is left for a later run."""
    given = {job: i for i, job in enumerate(table.column("job_id").to_pylist())}
    done = 0
    tried: set[int] = set()
    for _ in range(_ROUNDS):
        todo = [p for p in _parts_of(parts, list(given)) if p not in tried]
        if not todo:
            break
        for part in todo:
            tried.add(part)
            if not _claim(parts, part):
                continue
            try:
                done += _rewrite(parts, part, table, given)
            finally:
                with parts.transaction() as db:  # a rewrite that failed leaves the part free again
                    db.execute("UPDATE parts SET claimed_at = NULL WHERE part = ? AND retired_at IS NULL", (part,))
    return done


def _parts_of(parts: Parts, job_ids: list[str]) -> list[int]:
    """The parts holding the stored results of ``job_ids``."""
    found: set[int] = set()
    for i in range(0, len(job_ids), 5000):  # below SQLite's bound-parameter limit
        chunk = job_ids[i : i + 5000]
        sql = f"SELECT DISTINCT part FROM jobs WHERE job_id IN ({','.join('?' * len(chunk))})"
        found.update(row[0] for row in parts.query(sql, chunk))
    return sorted(found)


def _claim(parts: Parts, part: int) -> bool:
    """Claim ``part`` if it is visible and no live merger or rewrite holds it."""
    now = time.time()
    with parts.transaction() as db:
        cur = db.execute(
            f"UPDATE parts SET claimed_at = ? WHERE part = ? AND {VISIBLE} AND (claimed_at IS NULL OR claimed_at < ?)",
            (now, part, now - CLAIM_TTL_S),
        )
        return cur.rowcount == 1


def _rewrite(parts: Parts, part: int, table: pa.Table, given: Mapping[str, int]) -> int:
    """Rewrite claimed ``part`` with the completions of ``table`` filled in; how many rows were."""
    facts = pq.read_table(parts.facts(part))
    ids = facts.column("job_id").to_pylist()
    stored = facts.column("result_hash").to_pylist()
    hashes = table.column("result_hash").to_pylist()
    mean = _MOMENT_COLUMNS[0]
    means = facts.column(mean).to_pylist() if mean in facts.column_names else [None] * facts.num_rows
    rows = [
        (r, given[job])
        for r, job in enumerate(ids)
        if job in given and hashes[given[job]] == stored[r] and means[r] is None
    ]
    if not rows:
        return 0
    with parts.transaction() as db:
        target = parts.reserve(db, facts.num_rows, time.time())
    homes = facts.column("pics_part").to_pylist()
    spots = facts.column("pics_row").to_pylist()
    daily = table.column("daily").to_pylist()
    _write_pictures(parts.pictures(target), _pictures(parts, [(homes[r], spots[r], daily[i]) for r, i in rows]))
    for name in _MOMENT_COLUMNS:
        values = facts.column(name).to_pylist() if name in facts.column_names else [None] * facts.num_rows
        new = table.column(name).to_pylist()
        for r, i in rows:
            values[r] = new[i]
        facts = _set(facts, name, pa.array(values, type=pa.float64()))
    for k, (r, _) in enumerate(rows):
        homes[r], spots[r] = target, k
    facts = _set(facts, "pics_part", pa.array(homes, type=pa.int64()))
    facts = _set(facts, "pics_row", pa.array(spots, type=pa.int64()))
    size = write_part(parts.facts(target), facts, FACTS_ZSTD)
    with parts.transaction() as db:
        db.execute("UPDATE jobs SET part = ? WHERE part = ?", (target, part))
        parts.publish(db, target, size)
        db.execute("UPDATE parts SET retired_at = ? WHERE part = ?", (time.time(), part))
    return len(rows)


_PICTURES_SCHEMA = pa.schema([columns.SCHEMA.field(name) for name in PICTURES])


def _pictures(parts: Parts, wanted: list[tuple[int, int, Any]]) -> Iterator[pa.Table]:
    """The pictures of ``wanted`` rows (pictures part, row, new daily returns), in order, as tables of at most
    :data:`ROW_GROUP` rows: each row as stored, with the daily returns set. Each pictures file is opened once and
    only the row groups holding wanted rows are read."""
    files: dict[int, tuple[pq.ParquetFile, list[int]]] = {}
    for start in range(0, len(wanted), ROW_GROUP):
        group = wanted[start : start + ROW_GROUP]
        old: dict[tuple[int, int], dict[str, Any]] = {}
        for home in sorted({h for h, _, _ in group}):
            if home not in files:
                files[home] = _opened(parts.pictures(home))
            old.update(_rows_of(*files[home], home, sorted({s for h, s, _ in group if h == home})))
        out = []
        for home, spot, daily in group:
            row = {name: old[(home, spot)].get(name) for name in PICTURES}
            row["daily"] = daily
            out.append(row)
        yield pa.Table.from_pylist(out, schema=_PICTURES_SCHEMA)


def _opened(path: Path) -> tuple[pq.ParquetFile, list[int]]:
    """A pictures file and the first row of each of its row groups (plus the row count at the end)."""
    file = pq.ParquetFile(path)
    firsts = [0]
    for g in range(file.num_row_groups):
        firsts.append(firsts[-1] + file.metadata.row_group(g).num_rows)
    return file, firsts


def _rows_of(
    file: pq.ParquetFile, firsts: list[int], home: int, spots: list[int]
) -> dict[tuple[int, int], dict[str, Any]]:
    """Rows ``spots`` (sorted) of an opened pictures file, by (home, spot), reading only their row groups."""
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for g in sorted({bisect.bisect_right(firsts, s) - 1 for s in spots}):
        rows = file.read_row_group(g).to_pylist()
        for s in spots:
            if firsts[g] <= s < firsts[g + 1]:
                out[(home, s)] = rows[s - firsts[g]]
    return out


def _write_pictures(path: Path, tables: Iterator[pa.Table]) -> None:
    """Write a pictures file from ``tables`` (as :func:`~backfarm.results.partfiles.write_part` would write their
    concatenation), atomically, one table at a time; a failed write (a full disk) leaves nothing behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with writing(path.parent):
            with pq.ParquetWriter(tmp, _PICTURES_SCHEMA, compression="zstd", compression_level=PICTURES_ZSTD) as out:
                for table in tables:
                    out.write_table(table, row_group_size=ROW_GROUP)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """``table`` with column ``name`` replaced by ``values`` (appended when it has none)."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)
