"""Reading the embedded store: the SQLite index for ids, sweeps and where each result is; DuckDB for everything that
reads the part files (rankings, aggregates, records). No Arrow (:mod:`backfarm.results.duck` says why).

Every query reads the index once, in one read transaction, for the list of visible parts (and, filtered by sweep,
the rows of the sweep's results), then asks DuckDB about those files only. Parts that a merge replaced stay on disk
for a grace period (:mod:`backfarm.results.compaction`), so a query that listed them still reads them: readers work
while sweeps write and merges run, each seeing one committed state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from backfarm.core.results import AggregateRow, Conflict, Filters, ResultRecord, SweepInfo
from backfarm.results import ranking, rows
from backfarm.results.duck import Duck
from backfarm.results.parts import Parts
from backfarm.results.store import ResultReader

CHUNK = 5000
"""Ids per ``IN (...)`` query (well below SQLite's bound-parameter limit)."""
PAGE = 5000
"""Records per page when streaming results."""

# Progress in SQL: done = manifest jobs with a result; dead = manifest jobs given up on and still without a result.
_SWEEP = """SELECT s.sweep_id, s.created_at, s.spec, s.source,
    (SELECT COUNT(*) FROM manifest m WHERE m.sweep_id = s.sweep_id),
    (SELECT COUNT(*) FROM manifest m JOIN jobs j ON j.job_id = m.job_id WHERE m.sweep_id = s.sweep_id),
    (SELECT COUNT(*) FROM dead d JOIN manifest m ON m.sweep_id = d.sweep_id AND m.job_id = d.job_id
        WHERE d.sweep_id = s.sweep_id AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = d.job_id))
    FROM sweeps s"""

Spot = tuple[int, int]
"""Where a result's facts are: (part, row)."""


class EmbeddedReader(ResultReader):
    """:class:`ResultReader` on an embedded store directory; safe to share between threads, and between processes
    (each opens its own)."""

    def __init__(self, root: Path) -> None:
        self.parts = Parts(root)
        self.root = self.parts.root
        self.duck = Duck(self.root / "spill")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def close(self) -> None:
        """Close the index connection and the query engine."""
        self.parts.close()
        self.duck.close()

    # --- the index -------------------------------------------------------------------------------------------------

    @staticmethod
    def _hashes(db: Any, job_ids: set[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        ids = sorted(job_ids)
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            sql = f"SELECT job_id, result_hash FROM jobs WHERE job_id IN ({','.join('?' * len(chunk))})"
            found.update(db.execute(sql, chunk).fetchall())
        return found

    def existing(self, job_ids: Iterable[str]) -> set[str]:
        """The subset of ``job_ids`` that already have a result."""
        with self.parts.lock:
            return set(self._hashes(self.parts.db, set(job_ids)))

    def count(self) -> tuple[int, int]:
        """(results stored, sweeps recorded)."""
        results, sweeps = self.parts.query("SELECT (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM sweeps)")[0]
        return int(results), int(sweeps)

    def conflicts(self) -> list[Conflict]:
        """Every recorded conflict, oldest first."""
        found = self.parts.query("SELECT job_id, stored_hash, new_hash, at FROM conflicts ORDER BY id")
        return [Conflict(*row) for row in found]

    def pending(self, sweep_id: str) -> list[str]:
        """Expected job ids of a sweep that are neither done nor dead, sorted."""
        found = self.parts.query(
            "SELECT m.job_id FROM manifest m WHERE m.sweep_id = ? "
            "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = m.job_id) "
            "AND NOT EXISTS (SELECT 1 FROM dead d WHERE d.sweep_id = m.sweep_id AND d.job_id = m.job_id) "
            "ORDER BY m.job_id",
            (sweep_id,),
        )
        return [row[0] for row in found]

    def dead(self, sweep_id: str) -> dict[str, str]:
        """Dead job ids of a sweep with their reasons."""
        return dict(self.parts.query("SELECT job_id, reason FROM dead WHERE sweep_id = ? ORDER BY job_id", (sweep_id,)))

    def manifest(self, sweep_id: str) -> list[str]:
        """The expected job ids of a sweep, sorted."""
        found = self.parts.query("SELECT job_id FROM manifest WHERE sweep_id = ? ORDER BY job_id", (sweep_id,))
        return [row[0] for row in found]

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

    # --- the part files ----------------------------------------------------------------------------------------------

    def _source(self, filters: Filters | None) -> tuple[str, dict[str, Any], list[int]] | None:
        """The facts a query reads, as a DuckDB ``FROM`` clause with its parameters and the parts its ``file_index``
        numbers (``None``: nothing to read). Rows carry ``file_index`` and ``file_row_number``; a sweep filter keeps
        the rows of the sweep's results (from the index), the other filters are the caller's ``WHERE``."""
        with self.parts.snapshot() as db:
            if filters is None or filters.sweep is None:
                parts, spots = self.parts.visible(db), None
            else:
                sql = "SELECT j.part, j.row FROM manifest m JOIN jobs j ON j.job_id = m.job_id WHERE m.sweep_id = ?"
                spots = db.execute(sql, (filters.sweep,)).fetchall()
                parts = sorted({part for part, _ in spots})
        if not parts:
            return None
        params: dict[str, Any] = {"files": [str(self.parts.facts(p)) for p in parts]}
        clause = "read_parquet($files, file_row_number = true, union_by_name = true)"
        if spots is not None:
            index = {part: i for i, part in enumerate(parts)}
            params["at_file"] = [index[part] for part, _ in spots]
            params["at_row"] = [row for _, row in spots]
            clause += (
                " SEMI JOIN (SELECT unnest($at_file) AS file_index, unnest($at_row) AS file_row_number)"
                " USING (file_index, file_row_number)"
            )
        return clause, params, parts

    @staticmethod
    def _where(filters: Filters | None, params: dict[str, Any]) -> str:
        """The ``WHERE`` clause of ``filters``' field conditions (their values added to ``params``)."""
        conditions = []
        for name in rows.FILTER_COLUMNS:
            value = getattr(filters, name) if filters is not None else None
            if value is not None:
                params[f"f_{name}"] = value
                conditions.append(f'"{name}" = $f_{name}')
        return ("WHERE " + " AND ".join(conditions)) if conditions else ""

    def _records(self, found: list[dict[str, Any]], pictures: bool) -> list[ResultRecord]:
        """Records of facts rows (with ``pics_part`` and ``pics_row``), in their order; with their pictures, read
        in one query, when ``pictures``."""
        if pictures and found:
            homes = sorted({row["pics_part"] for row in found})
            index = {part: i for i, part in enumerate(homes)}
            params = {
                "files": [str(self.parts.pictures(p)) for p in homes],
                "at_file": [index[row["pics_part"]] for row in found],
                "at_row": [row["pics_row"] for row in found],
            }
            sql = (
                "SELECT file_index, * FROM read_parquet($files, file_row_number = true, union_by_name = true) "
                "SEMI JOIN (SELECT unnest($at_file) AS file_index, unnest($at_row) AS file_row_number) "
                "USING (file_index, file_row_number)"
            )
            pics = {(homes[p["file_index"]], p["file_row_number"]): p for p in self.duck.named(sql, params)}
            found = [{**row, **pics[(row["pics_part"], row["pics_row"])]} for row in found]
        return [rows.record(row) for row in found]

    def get(self, job_id: str) -> ResultRecord | None:
        """One result by job id."""
        spot = self.parts.query("SELECT part, row FROM jobs WHERE job_id = ?", (job_id,))
        return self._at([(spot[0][0], spot[0][1])])[0] if spot else None

    def _at(self, spots: Sequence[Spot], pictures: bool = True) -> list[ResultRecord]:
        """Whole records at ``spots``, in that order."""
        if not spots:
            return []
        parts = sorted({part for part, _ in spots})
        index = {part: i for i, part in enumerate(parts)}
        params = {
            "files": [str(self.parts.facts(p)) for p in parts],
            "at_file": [index[part] for part, _ in spots],
            "at_row": [row for _, row in spots],
        }
        sql = (
            f"SELECT file_index, {_FACTS} FROM read_parquet($files, file_row_number = true, union_by_name = true) "
            "SEMI JOIN (SELECT unnest($at_file) AS file_index, unnest($at_row) AS file_row_number) "
            "USING (file_index, file_row_number)"
        )
        by_spot = {(parts[r["file_index"]], r["file_row_number"]): r for r in self.duck.named(sql, params)}
        return self._records([by_spot[spot] for spot in spots], pictures)

    def top(
        self,
        metric: str,
        n: int,
        filters: Filters | None = None,
        ascending: bool | None = None,
        pictures: bool = True,
    ) -> list[ResultRecord]:
        """The best ``n`` results by ``metric``: defined values in order, then undefined ones, ties by job id. One
        DuckDB query ranks on the metric column and reads the other columns of the winners only."""
        column = rows.metric_column(ranking.check_metric(metric))
        source = self._source(filters) if ranking.check_limit(n) else None
        if source is None:
            return []
        clause, params, _ = source
        order = "ASC" if ranking.is_ascending(metric, ascending) else "DESC"
        params["n"] = n
        sql = (
            f"SELECT {_FACTS} FROM {clause} {self._where(filters, params)} "
            f'ORDER BY "{column}" {order} NULLS LAST, job_id LIMIT $n'
        )
        return self._records(self.duck.named(sql, params), pictures)

    def iter_results(self, filters: Filters | None = None) -> Iterator[ResultRecord]:
        """Every result passing ``filters``, ordered by job id, read a page at a time."""
        source = self._source(filters)
        if source is None:
            return
        clause, params, parts = source
        sql = f"SELECT file_index, file_row_number FROM {clause} {self._where(filters, params)} ORDER BY job_id"
        order = self.duck.columns(sql, params)
        files, at = order["file_index"], order["file_row_number"]
        for i in range(0, len(at), PAGE):
            spots = [(parts[f], int(r)) for f, r in zip(files[i : i + PAGE], at[i : i + PAGE], strict=True)]
            yield from self._at(spots)

    def aggregate(self, by: str, filters: Filters | None = None) -> list[AggregateRow]:
        """Summaries by ``strategy`` or ``symbol``, from the metric columns alone (sums exactly rounded in Python,
        so every store gives the same digits)."""
        key = ranking.check_group(by)
        source = self._source(filters)
        if source is None:
            return []
        clause, params, _ = source
        names = ", ".join(f'"{name}"' for name in ranking.AGGREGATE_COLUMNS)
        data = self.duck.columns(f'SELECT "{key}", {names} FROM {clause} {self._where(filters, params)}', params)
        return ranking.aggregate_columns(data[key], [data[name] for name in ranking.AGGREGATE_COLUMNS])


_FACTS = "*"
"""The facts columns a record is made of, and where its pictures are: all of them, by name (parts written before a
column existed lack it; ``union_by_name`` reads it there as null, and a query over old parts only has no such
column, which :func:`backfarm.results.rows.record` takes as null too)."""


def _sweep_info(row: Sequence[Any]) -> SweepInfo:
    sweep_id, created_at, spec, source, total, done, dead = row
    return SweepInfo(sweep_id, created_at, json.loads(spec), source, total, done, dead)
