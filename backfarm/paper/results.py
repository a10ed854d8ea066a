"""A finished session's results: one leaderboard entry per account (``kind="paper"``), then its final status.

Publishing is idempotent: an account's job id is a hash of (session id, account), its metrics are deterministic
for a given run, so a runner that dies after publishing and is resumed publishes the same records again, which the
store counts as duplicates, not conflicts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from backfarm._util.ids import short_hash
from backfarm._util.time import from_ns, iso
from backfarm.config import Settings
from backfarm.core.candles import bars_per_year
from backfarm.core.results import ResultRecord, round_metric
from backfarm.core.versions import ENGINE_VERSION
from backfarm.paper.accounts import Account
from backfarm.paper.spec import AccountSpec, SessionSpec
from backfarm.paper.store.base import SessionStore
from backfarm.results.factory import open_store
from backfarm.results.store import ResultStore
from backfarm.strategies.registry import identity

LIVE_SOURCE = "coinbase-live"
"""The ``source`` of live sessions' leaderboard results."""


def account_record(
    spec: SessionSpec, account_spec: AccountSpec, account: Account, span: tuple[int, int], checksum: str, stopped: bool
) -> ResultRecord | None:
    """The leaderboard result of one account (``kind="paper"``, the session id in ``extra``) over ``span`` (epoch
    ns, the first bar's open to the end of the last bar played), or ``None`` when it has no metrics yet."""
    metrics = account.metrics(bars_per_year(spec.bar_seconds))
    if metrics is None:
        return None
    return ResultRecord(
        job_id=short_hash({"paper": spec.session_id, "account": account.key}),
        strategy=account_spec.strategy,
        strategy_version=identity(account_spec.strategy),
        params=dict(account_spec.params),
        symbol=account_spec.symbol,
        granularity=spec.granularity,
        start=iso(from_ns(span[0])),
        end=iso(from_ns(span[1])),
        source=spec.source if spec.replay else LIVE_SOURCE,
        costs=spec.costs.to_dict(),
        capital=spec.capital,
        metrics={k: round_metric(v) for k, v in metrics.items()},
        candles_checksum=checksum,
        engine_version=ENGINE_VERSION,
        bars=int(account.bars),
        kind="paper",
        created_at=time.time(),
        extra={"session": spec.session_id, "feed": spec.feed, "final_equity": account.final_equity, "stopped": stopped},
    )


def publish(
    store: SessionStore,
    session_id: str,
    records: Sequence[ResultRecord],
    status: str,
    final: dict[str, Any],
    settings: Settings,
    results: ResultStore | None,
) -> None:
    """Results to the leaderboard (``results``, else the store the settings name; idempotent: same job ids, same
    metrics), then the session's final status and metrics."""
    if records:
        if results is None:
            with open_store(settings) as board:
                board.put(records)
        else:
            results.put(records)
    store.update(session_id, status=status, finished_at=time.time(), final=final)
