"""Curves for results stored before artifacts were kept: recompute the backtest in memory, never write it back.

A job's id hashes everything that determines its result, so a stored result is rebuilt exactly from its own fields
(strategy, parameters, window, costs, capital, source) and the cached candles. Reruns of a sweep reuse such results
instead of recomputing them, so without this they would never get a picture. The recomputed record is only shown:
the store stays read-only. Paper results cannot be recomputed (their quotes were live).
"""

from __future__ import annotations

from dataclasses import replace

from backfarm.config import Settings
from backfarm.engine.costs import Costs
from backfarm.errors import BackfarmError
from backfarm.leaderboard.model import ResultRecord
from backfarm.sweeps.jobs import Job


def job_of(record: ResultRecord) -> Job | None:
    """The job that produced ``record``, or ``None`` if its fields no longer hash to its id (another version)."""
    try:
        job = Job(
            strategy=record.strategy,
            strategy_version=record.strategy_version,
            params=dict(record.params),
            symbol=record.symbol,
            granularity=record.granularity,
            start=record.start,
            end=record.end,
            source=record.source,
            costs=Costs(**record.costs),
            capital=float(record.capital),
        )
    except (TypeError, ValueError, BackfarmError):
        return None
    return job if job.job_id == record.job_id else None


def with_curve(record: ResultRecord, settings: Settings) -> tuple[ResultRecord, str | None]:
    """``record`` with its equity curve and trades, recomputed from cached candles if it has none stored.

    Returns the record and ``None``, or the record unchanged and the reason no curve could be made.
    """
    if "equity" in record.extra:
        return record, None
    if record.kind != "backtest":
        return record, "no equity curve was stored with this paper result"
    job = job_of(record)
    if job is None:
        return record, "no equity curve stored, and this result came from another engine or strategy version"
    # Imported here: the strategies and the engine are only needed for this fallback.
    from backfarm.tasks.runner import CandleMemo, run_job

    try:
        # Read the cache only (a dashboard must not download); synthetic candles are generated, not fetched.
        candles, indicators = CandleMemo(settings).get(job.data_key, fetch=job.source == "synthetic")
        fresh = run_job(job, candles, indicators)
    except BackfarmError as exc:
        return record, f"no equity curve stored, and it cannot be recomputed: {exc}"
    if fresh.result_hash != record.result_hash:
        return record, "no equity curve stored, and a recomputation disagrees with the stored metrics"
    return replace(record, extra={**record.extra, **fresh.extra, "recomputed": True}), None
