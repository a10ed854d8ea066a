"""Curves for results stored before artifacts were kept: recompute the backtest in memory, never write it back.

A job's id hashes everything that determines its result, so a stored result is rebuilt exactly from its own fields
(strategy, parameters, window, costs, capital, source) and the cached candles. Reruns of a sweep reuse such results
instead of recomputing them, so without this they would never get a picture. The recomputed record is only shown:
the store stays read-only. Paper results cannot be recomputed (their quotes were live): their curve and trades are
rebuilt from their session's equity marks and round trips instead, while the session store still has them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from backfarm.candles.memo import CandleMemo
from backfarm.config import Settings
from backfarm.core.results import ResultRecord
from backfarm.dashboard.paper import record_extra
from backfarm.errors import BackfarmError
from backfarm.execution.complete import job_of
from backfarm.execution.runner import run_job
from backfarm.paper.store import open_session_store
from backfarm.paper.store.base import SESSION_FILE, SessionStore


def with_curve(
    record: ResultRecord,
    settings: Settings | None,
    memo: CandleMemo | None = None,
    sessions: SessionStore | None = None,
) -> tuple[ResultRecord, str | None]:
    """``record`` with its equity curve and trades: recomputed from cached candles if it has none stored, or for a
    paper result rebuilt from its session (in ``sessions``, else the session store of ``settings`` if there is one).
    Without ``settings`` (no data directory to read) only the paper rebuild from ``sessions`` is possible.

    Returns the record and ``None``, or the record unchanged and the reason no curve could be made. ``memo`` (of the
    same settings) shares candles across calls; without it each call loads its own (a memo is not thread-safe).
    """
    if "equity" in record.extra:
        return record, None
    if record.kind != "backtest":
        rebuilt = _paper_extra(record, settings, sessions)
        if not rebuilt:
            return record, "no equity curve was stored with this paper result, and its session has no marks for it"
        return replace(record, extra={**record.extra, **rebuilt}), None
    if settings is None:
        return record, "no equity curve stored, and no data directory to recompute it from"
    job = job_of(record)
    if job is None:
        return record, "no equity curve stored, and this result came from another engine or strategy version"
    try:
        # Read the cache only (a dashboard must not download); synthetic candles are generated, not fetched.
        candles, indicators = (memo or CandleMemo(settings)).get(job.data_key, fetch=job.source == "synthetic")
        fresh = run_job(job, candles, indicators)
    except BackfarmError as exc:
        return record, f"no equity curve stored, and it cannot be recomputed: {exc}"
    if fresh.result_hash != record.result_hash:
        return record, "no equity curve stored, and a recomputation disagrees with the stored metrics"
    return replace(record, extra={**record.extra, **fresh.extra, "recomputed": True}), None


def _paper_extra(
    record: ResultRecord, settings: Settings | None, sessions: SessionStore | None
) -> dict[str, Any] | None:
    """A paper result's artifacts rebuilt from its session, or ``None`` (no session store, or the session is gone)."""
    if sessions is not None:
        return record_extra(sessions, record)
    if settings is None or (not settings.redis_url and not (settings.data_dir / SESSION_FILE).exists()):
        return None  # never create an embedded session store just to look
    with open_session_store(settings) as store:
        return record_extra(store, record)
