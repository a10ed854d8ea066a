"""Completing results stored before backfarm kept the moments of their bar returns and their daily returns, so that
later analyses (overfitting statistics, walk-forward stitching, bootstrap bands) never recompute a backtest.

Each is recomputed once from its own fields and the cached candles, checked against its stored result hash, and
filled in.

A job's id hashes everything that determines its result, so a stored result is rebuilt exactly from its own fields;
one whose fields no longer hash to its id came from another engine or strategy version and is left as it is. A
recomputation whose hash differs from the stored one is recorded as a conflict (the stored result is kept), as a
rerun that disagrees always is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from backfarm.candles.memo import CandleMemo
from backfarm.config import Settings
from backfarm.core.jobs import DataKey, Job
from backfarm.core.results import Filters, ResultRecord
from backfarm.errors import BackfarmError
from backfarm.execution.runner import run_jobs
from backfarm.results.store import ResultStore


@dataclass
class CompletionReport:
    """What a completion did: results found without their statistics, and what became of them."""

    found: int = 0
    completed: int = 0
    other_version: int = 0
    """Fields that no longer hash to the job id: made by another engine or strategy version."""
    disagreed: int = 0
    """Recomputed with another result hash (recorded as conflicts; the stored results are kept)."""
    failed: int = 0
    """Not recomputed: no candles for the window, or the strategy raised (``problems`` says why)."""
    problems: list[str] = field(default_factory=list)
    """One line per window or job that could not be recomputed (the first few)."""


MAX_PROBLEMS = 5


def job_of(record: ResultRecord) -> Job | None:
    """The job that produced ``record``, or ``None`` if its fields no longer hash to its id (another version)."""
    try:
        return Job.from_dict(vars(record))  # a record has every field of a job; the id must match
    except (KeyError, TypeError, ValueError, BackfarmError):
        return None


def complete(
    store: ResultStore,
    settings: Settings,
    filters: Filters | None = None,
    on_progress: Callable[[int], None] | None = None,
    memo: CandleMemo | None = None,
) -> CompletionReport:
    """Complete every backtest result passing ``filters`` that lacks its moments and daily returns (fetching
    candles that are not cached, as a sweep would). ``on_progress`` hears how many results each step looked at."""
    memo = memo or CandleMemo(settings)
    report = CompletionReport()
    unit: object = None
    pending: list[pa.Table] = []
    for page_unit, records in store.incomplete(filters):
        if page_unit != unit and pending:
            report.completed += store.fill_in(pa.concat_tables(pending))  # one rewrite per unit
            pending.clear()
        unit = page_unit
        report.found += len(records)
        pending.extend(_recompute(store, records, memo, report))
        if on_progress is not None:
            on_progress(len(records))
    if pending:
        report.completed += store.fill_in(pa.concat_tables(pending))
    return report


def _recompute(
    store: ResultStore, records: list[ResultRecord], memo: CandleMemo, report: CompletionReport
) -> list[pa.Table]:
    """The recomputed results of ``records`` that agree with them, as tables (one per window); disagreements are
    put (and so recorded as conflicts), everything else counted in ``report``."""
    windows: dict[DataKey, list[tuple[Job, str]]] = {}
    for record in records:
        job = job_of(record)
        if job is None:
            report.other_version += 1
        else:
            windows.setdefault(job.data_key, []).append((job, record.result_hash))
    out = []
    for key, group in windows.items():
        try:
            candles, indicators = memo.get(key)
            outcome = run_jobs([job for job, _ in group], candles, indicators, curves=False)
        except BackfarmError as exc:
            report.failed += len(group)
            _problem(report, f"{' '.join(key)}: {exc}")
            continue
        report.failed += len(outcome.failed)
        for job_id, reason in outcome.failed.items():
            _problem(report, f"{job_id}: {reason}")
        stored = {job.job_id: digest for job, digest in group}
        fresh = outcome.results
        pairs = zip(fresh["job_id"].to_pylist(), fresh["result_hash"].to_pylist(), strict=True)
        agree = [i for i, (job_id, digest) in enumerate(pairs) if stored[job_id] == digest]
        if len(agree) < fresh.num_rows:
            others = sorted(set(range(fresh.num_rows)) - set(agree))
            report.disagreed += len(others)
            store.put(fresh.take(pa.array(others, type=pa.int64())))  # a disagreeing rerun is a conflict
        if agree:
            out.append(fresh.take(pa.array(agree, type=pa.int64())))
    return out


def _problem(report: CompletionReport, line: str) -> None:
    if len(report.problems) < MAX_PROBLEMS:
        report.problems.append(line)
