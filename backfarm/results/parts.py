"""The files of the embedded result store: a directory of Parquet parts and the SQLite index that says which are
visible and where each result is.

Layout under ``{data_dir}/results/``::

    index.sqlite   jobs (job id → result hash, part, row), parts (number, rows, bytes, claimed/retired times),
                   sweeps, manifest, dead, conflicts
    parts/         {part:010d}.parquet: rows of :mod:`backfarm.results.columns`, zstd, in :data:`ROW_GROUP`-row groups

A part is written to a temporary name and renamed into place inside the write transaction that registers it, so a
part is visible exactly when its rows are indexed. A writer that dies before its commit leaves a file no index row
names: invisible, and overwritten by the next part that gets its number. Queries read the index once, in one read
transaction (WAL gives them a consistent snapshot while others write), then only the row groups and columns they need.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backfarm._util.sqlite import write_transaction
from backfarm.errors import ConfigError
from backfarm.results import columns

SCHEMA_VERSION = 2
"""Version of the index (1 was the single-file store of :mod:`backfarm.results.legacy`)."""
INDEX_FILE = "index.sqlite"
PARTS_DIR = "parts"
ROW_GROUP = 1024
"""Rows per Parquet row group: fetching one record reads its group only (~2 MB at most with its pictures)."""
BUSY_TIMEOUT_S = 30.0
"""How long a write waits for another process's write transaction before giving up."""
CACHE_KIB = 65536
"""SQLite page cache per connection: the job index of a million results stays in memory."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY, result_hash TEXT NOT NULL, part INTEGER NOT NULL, row INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS parts (
        part INTEGER PRIMARY KEY, rows INTEGER NOT NULL, bytes INTEGER NOT NULL, created_at REAL NOT NULL,
        claimed_at REAL, retired_at REAL)""",
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
)
VISIBLE = "retired_at IS NULL AND bytes > 0"
"""The parts queries read: registered and written (bytes > 0), not replaced by a merge."""


class Parts:
    """The store's directory: one index connection (shared between threads under a lock) and the part files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / PARTS_DIR
        self.lock = threading.RLock()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(
                self.root / INDEX_FILE, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._setup()
        except (OSError, sqlite3.DatabaseError) as exc:
            raise ConfigError(f"cannot open the result store {self.root}: {exc}") from None

    def _setup(self) -> None:
        db = self.db
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        db.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: committed transactions survive a process crash; only an OS crash can lose the last few.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(f"the result store {self.root} was written by a newer backfarm (index v{version})")
        if version == SCHEMA_VERSION:
            return
        with self.transaction():
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (see :func:`~backfarm._util.sqlite.write_transaction`)."""
        with write_transaction(self.db, self.lock, f"the result store {self.root}") as db:
            yield db

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same state of the index."""
        with self.lock:
            self.db.execute("BEGIN")
            try:
                yield self.db
            finally:
                self.db.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read query."""
        with self.lock:
            return self.db.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the index connection."""
        with self.lock:
            self.db.close()

    def totals(self) -> tuple[int, int, int]:
        """(visible parts, results in them, bytes of every file of the store on disk)."""
        parts, rows = self.query(f"SELECT COUNT(*), COALESCE(SUM(rows), 0) FROM parts WHERE {VISIBLE}")[0]
        size = sum(f.stat().st_size for f in self.dir.glob("*.parquet"))
        return int(parts), int(rows), size

    def facts(self, part: int) -> Path:
        """The file of part ``part``'s facts: everything but the pictures (what queries scan, and merges rewrite)."""
        return self.dir / f"{part:010d}.facts.parquet"

    def pictures(self, part: int) -> Path:
        """The file of the pictures committed with part ``part`` (written once, never merged or moved)."""
        return self.dir / f"{part:010d}.pictures.parquet"

    def visible(self, db: sqlite3.Connection) -> list[int]:
        """The parts queries read, in order."""
        return [row[0] for row in db.execute(f"SELECT part FROM parts WHERE {VISIBLE} ORDER BY part")]

    def add(self, db: sqlite3.Connection, rows: pa.Table, now: float) -> int:
        """Inside a write transaction: number a new part, write ``rows`` as its two files and register it (the
        caller indexes its rows in the same transaction); its number."""
        part = self.reserve(db, rows.num_rows, now)
        home = pa.array(np.full(rows.num_rows, part, dtype=np.int64))
        facts = rows.drop_columns(list(PICTURES)).append_column("pics_part", home)
        facts = facts.append_column("pics_row", pa.array(np.arange(rows.num_rows, dtype=np.int64)))
        write_part(self.pictures(part), rows.select(list(PICTURES)), PICTURES_ZSTD)
        self.publish(db, part, write_part(self.facts(part), facts, None))
        return part

    @staticmethod
    def reserve(db: sqlite3.Connection, rows: int, now: float) -> int:
        """A new part number, registered but not visible until :meth:`publish`."""
        return int(
            db.execute(
                "INSERT INTO parts (rows, bytes, created_at) VALUES (?, 0, ?) RETURNING part", (rows, now)
            ).fetchone()[0]
        )

    @staticmethod
    def publish(db: sqlite3.Connection, part: int, size: int) -> None:
        """Make a reserved part visible, its facts written (``size`` bytes)."""
        db.execute("UPDATE parts SET bytes = ?, claimed_at = NULL WHERE part = ?", (size, part))

    def read(self, part: int, names: Sequence[str], rows: list[int] | None = None) -> pa.Table:
        """Columns ``names`` of part ``part``'s results, plus ``_part`` and ``_row`` (where each result's facts are):
        every row, or only ``rows`` (reading just their row groups), in row order. Picture columns are fetched from
        the pictures files the rows point to."""
        pictures = [n for n in names if n in PICTURES]
        wanted = [n for n in names if n not in PICTURES] + (["pics_part", "pics_row"] if pictures else [])
        data, positions = _read_rows(self.facts(part), wanted, rows)
        if pictures:
            data = _join_pictures(self, data, pictures).drop_columns(["pics_part", "pics_row"])
        parts = pa.array(np.full(data.num_rows, part, dtype=np.int64))
        return data.append_column("_part", parts).append_column("_row", pa.array(positions))


PICTURES: tuple[str, ...] = ("equity", "trades", "extra")
"""Columns kept apart from the facts: only a whole record needs them, and they are most of the bytes."""
PICTURES_ZSTD = 1
"""zstd level of pictures files: written once, with every commit (level 1 compresses them about as well as 3, in
half the time)."""
FACTS_ZSTD = 3
"""zstd level of merged facts (a commit's own facts are written uncompressed: they are merged, and so rewritten,
soon)."""


def _read_rows(path: Path, names: Sequence[str], rows: list[int] | None) -> tuple[pa.Table, np.ndarray]:
    """Columns ``names`` of a part file: every row, or only ``rows`` (reading just their row groups), in row order;
    and the row numbers read."""
    file = pq.ParquetFile(path)
    if rows is None:
        data = file.read(columns=list(names))
        return data, np.arange(data.num_rows, dtype=np.int64)
    # Group g holds rows g × ROW_GROUP onwards; read the groups that hold ``rows``, then pick the rows from the groups
    # as they were laid end to end.
    positions = np.sort(np.asarray(rows, dtype=np.int64))
    groups = np.unique(positions // ROW_GROUP)
    data = file.read_row_groups(groups.tolist(), columns=list(names))
    sizes = [file.metadata.row_group(int(g)).num_rows for g in groups]
    offsets = np.concatenate(([0], np.cumsum(sizes)))[np.searchsorted(groups, positions // ROW_GROUP)]
    return data.take(pa.array(offsets + positions % ROW_GROUP)), positions


def _join_pictures(parts: Parts, data: pa.Table, names: list[str]) -> pa.Table:
    """``data`` (which has ``pics_part`` and ``pics_row``) with the picture columns ``names`` of each of its rows."""
    homes = data.column("pics_part").to_numpy()
    rows = data.column("pics_row").to_numpy()
    pieces, order = [], []
    for home in np.unique(homes):
        where = np.flatnonzero(homes == home)
        pieces.append(_read_rows(parts.pictures(int(home)), names, rows[where].tolist())[0])
        order.append(where[np.argsort(rows[where], kind="stable")])  # a piece comes back in row order
    joined = (
        pa.concat_tables(pieces, promote_options="default") if pieces else columns.SCHEMA.empty_table().select(names)
    )
    back = np.empty(len(homes), dtype=np.int64)  # back[i]: where data's row i landed in ``joined``
    back[np.concatenate(order) if order else back[:0]] = np.arange(len(homes))
    for name in names:
        data = data.append_column(name, joined.column(name).take(pa.array(back)))
    return data


def write_part(path: Path, rows: pa.Table, zstd: int | None) -> int:
    """Write ``rows`` as a part file (``zstd`` level, or uncompressed; :data:`ROW_GROUP`-row groups) atomically; its
    size in bytes."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    codec = {"compression": "zstd", "compression_level": zstd} if zstd is not None else {"compression": "none"}
    pq.write_table(rows, tmp, row_group_size=ROW_GROUP, write_statistics=False, **codec)
    os.replace(tmp, path)
    return path.stat().st_size
