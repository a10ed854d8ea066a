"""A finished session's results: one leaderboard entry per account (``kind="paper"``), then its final status.

Publishing is idempotent: an account's job id is a hash of (session id, account), its metrics are deterministic
for a given run, so a runner that dies after publishing and is resumed publishes the same records again, which the
store counts as duplicates, not conflicts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from backfarm.candles.cache import from_ns
from backfarm.candles.schema import COLUMNS, bars_per_year, checksum_arrays
from backfarm.config import Settings
from backfarm.engine import ENGINE_VERSION
from backfarm.leaderboard.model import ResultRecord, round_metric
from backfarm.paper.checkpoint import SessionStore
from backfarm.strategies.registry import get_strategy
from backfarm.sweeps.jobs import iso, short_hash

if TYPE_CHECKING:
    from backfarm.paper.session import SessionOutcome, SessionRunner

LIVE_SOURCE = "coinbase-live"
"""The ``source`` of live sessions' leaderboard results."""


def result_records(runner: SessionRunner) -> list[ResultRecord]:
    """One leaderboard result per account (``kind="paper"``, the session id in ``extra``)."""
    spec = runner.spec
    records = []
    end = iso(from_ns(runner.start_ns + max(runner.bars_done.values(), default=0) * runner.step))
    for symbol, slots in runner.slots.items():
        buffer = runner.buffers[symbol]
        lo, hi = runner.offsets[symbol], runner.offsets[symbol] + runner.bars_done[symbol]
        checksum = checksum_arrays(*(buffer.column(c)[lo:hi] for c in COLUMNS))
        for slot in slots:
            metrics = slot.account.metrics(bars_per_year(spec.bar_seconds))
            if metrics is None:
                continue
            records.append(
                ResultRecord(
                    job_id=short_hash({"paper": spec.session_id, "account": slot.account.key}),
                    strategy=slot.spec.strategy,
                    strategy_version=get_strategy(slot.spec.strategy).version,
                    params=dict(slot.spec.params),
                    symbol=symbol,
                    granularity=spec.granularity,
                    start=iso(from_ns(runner.start_ns)),
                    end=end,
                    source=spec.source if spec.replay else LIVE_SOURCE,
                    costs=spec.costs.to_dict(),
                    capital=spec.capital,
                    metrics={k: round_metric(v) for k, v in metrics.items()},
                    candles_checksum=checksum,
                    engine_version=ENGINE_VERSION,
                    bars=int(slot.account.bars),
                    kind="paper",
                    created_at=time.time(),
                    extra={
                        "session": spec.session_id,
                        "feed": spec.feed,
                        "final_equity": slot.account.final_equity,
                        "stopped": runner.stopped,
                    },
                )
            )
    return records


def publish(
    store: SessionStore, runner: SessionRunner, outcome: SessionOutcome, settings: Settings, results: Any
) -> None:
    """Results to the leaderboard (idempotent: same job ids, same metrics), then the final status."""
    records = result_records(runner)
    if records:
        if results is None:
            from backfarm.leaderboard.factory import open_store

            with open_store(settings) as board:
                board.put(records)
        else:
            results.put(records)
    final = dict(outcome.metrics)
    store.update(runner.spec.session_id, status=outcome.status, finished_at=time.time(), final=final)
