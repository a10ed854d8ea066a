"""Writing the part files of the embedded store: a table of results as a facts file and a pictures file.

Each commit writes two Parquet files, renamed into place (:func:`write_part`) inside the index transaction that
registers them (:mod:`backfarm.results.parts`): the facts (identity, hash, metrics, and where each row's pictures
are) and the pictures (equity curve, trade list, other ``extra``). Merges rewrite facts only
(:mod:`backfarm.results.compaction`); pictures stay where their commit wrote them.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backfarm._util.disk import writing
from backfarm.core.results import METRICS
from backfarm.results.parts import Parts
from backfarm.results.rows import PICTURES, metric_column

ROW_GROUP = 1024
"""Rows per Parquet row group: fetching one record reads its group only."""
PICTURES_ZSTD = 1
"""zstd level of pictures files: written once, with every commit (level 1 compresses them about as well as 3, in
half the time)."""
FACTS_ZSTD = 3
"""zstd level of merged facts (a commit's own facts are written uncompressed: they are merged, and so rewritten,
soon)."""

_METRICS = frozenset(metric_column(m) for m in METRICS)


def add(parts: Parts, db: sqlite3.Connection, rows: pa.Table, now: float) -> int:
    """Inside a write transaction: number a new part, write ``rows`` (a table of
    :data:`backfarm.results.columns.SCHEMA`) as its two files and register it (the caller indexes its rows in the
    same transaction); its number."""
    part = parts.reserve(db, rows.num_rows, now)
    home = pa.array(np.full(rows.num_rows, part, dtype=np.int64))
    facts = rows.drop_columns(list(PICTURES)).append_column("pics_part", home)
    facts = facts.append_column("pics_row", pa.array(np.arange(rows.num_rows, dtype=np.int64)))
    write_part(parts.pictures(part), rows.select(list(PICTURES)), PICTURES_ZSTD)
    parts.publish(db, part, write_part(parts.facts(part), facts, None))
    return part


def write_part(path: Path, rows: pa.Table, zstd: int | None) -> int:
    """Write ``rows`` as a part file (``zstd`` level, or uncompressed; :data:`ROW_GROUP`-row groups) atomically; its
    size in bytes. Metric columns get min/max statistics per row group: a top-N query skips the groups whose best
    value cannot make the cut."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    codec = {"compression": "zstd", "compression_level": zstd} if zstd is not None else {"compression": "none"}
    stats = [name for name in rows.column_names if name in _METRICS]
    try:
        with writing(path.parent):
            pq.write_table(rows, tmp, row_group_size=ROW_GROUP, write_statistics=stats or False, **codec)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not keep the half-written file (the space it took)
        raise
    return path.stat().st_size
