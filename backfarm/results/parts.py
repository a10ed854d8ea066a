"""The embedded result store's directory: the SQLite index of parts, sweeps and where each result is, and the part
files' names (written by :mod:`backfarm.results.partfiles`, read by :mod:`backfarm.results.reader`).

Layout under ``{data_dir}/results/``::

    index.sqlite   jobs (job id → result hash, part, row), parts (number, rows, bytes, claimed/retired times),
                   sweeps, manifest, dead, conflicts
    parts/         {part:010d}.facts.parquet     identity, hash and metrics of each result, and where its pictures are
                   {part:010d}.pictures.parquet  equity curves and trade lists, as their commit wrote them

A part is written to a temporary name and renamed into place inside the write transaction that registers it, so a
part is visible exactly when its rows are indexed. A writer that dies before its commit leaves a file no index row
names: invisible, and overwritten by the next part that gets its number. Queries read the index once, in one read
transaction (WAL gives them a consistent snapshot while others write), then only the row groups and columns they need.
Nothing here loads Arrow.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backfarm._util.sqlite import write_transaction
from backfarm.config import Settings
from backfarm.errors import ConfigError

SCHEMA_VERSION = 2
"""Version of the index (1 was the single-file store of :mod:`backfarm.results.legacy`)."""
INDEX_FILE = "index.sqlite"
PARTS_DIR = "parts"
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
        """One read transaction: every query inside sees the same state of the index. It ends whatever stops it
        (Ctrl-C or SIGTERM included, even the instant ``BEGIN`` returns): the connection is never left inside it."""
        with self.lock:
            try:
                self.db.execute("BEGIN")
                yield self.db
            finally:
                if self.db.in_transaction:
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


def embedded_root(settings: Settings) -> Path:
    """The embedded store's directory under ``settings``; :class:`ConfigError` when the data directory holds
    results in the old single-file format that have not been migrated yet (nothing is lost: the old file stays)."""
    old = settings.legacy_store_path
    if old.exists() and not (settings.store_path / INDEX_FILE).exists():
        raise ConfigError(
            f"{settings.data_dir} holds results in the format of backfarm before 0.2 ({old.name}); "
            "convert them once with `backfarm store migrate` (the old file is kept)"
        )
    return settings.store_path
