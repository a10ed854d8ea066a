"""Every Redis key the farm uses: its own, under backfarm's prefix, and the ones kombu keeps for Celery's queues.

========================  ======  ================================================================================
key                       type    holds
========================  ======  ================================================================================
``attempts:{sweep}``      hash    job id → runs started (a job past ``max_attempts`` is marked dead)
``cancelled:{sweep}``     string  why and when the sweep was cancelled (its batches are skipped)
``progress:{sweep}``      pubsub  a worker announces each batch it committed (waiting clients wake at once)
``lock:{name}``           string  a cluster-wide lock (one fetch of a candle partition at a time)
``rate:{scope}``          string  the next free slot of a cluster-wide rate limit (Coinbase's, GCRA)
``slowdown:{scope}``      hash    how much 429s slowed that limit down, and when (``factor``, ``at``)
``worker:{name}``         string  a live worker's strategies (name → identity), expiring unless it refreshes it
``reconciled:{sweep}``    string  the last time a worker's watchdog re-enqueued a stalled sweep: when, who, how many
========================  ======  ================================================================================

kombu (Celery's Redis transport) keeps each queue as a list named after it (:data:`QUEUES`) and the messages handed
to a worker but not yet acknowledged in the hash :data:`UNACKED`; the farm reads their lengths, never writes them.
The result store's keys (results, leaderboards, sweeps, manifests, done and dead sets) are in
:mod:`backfarm.results.keys`.
"""

from __future__ import annotations

from backfarm._util.keys import KeySpace

BACKTEST_QUEUE, PAPER_QUEUE, DATA_QUEUE = "backtest", "paper", "data"
QUEUES: tuple[str, ...] = (BACKTEST_QUEUE, PAPER_QUEUE, DATA_QUEUE)
"""Every queue the farm uses: CPU batches, long paper sessions, rate-limited candle fetches (kombu names each
queue's Redis list after the queue)."""
UNACKED = "unacked"
"""kombu's hash of messages delivered to a worker and not yet acknowledged (its default ``unacked_key``)."""


class FarmKeys(KeySpace):
    """The farm's own key names under backfarm's prefix."""

    def attempts(self, sweep_id: str) -> str:
        """Hash of a sweep's attempt counters (job id → runs started)."""
        return self.key("attempts", sweep_id)

    def cancelled(self, sweep_id: str) -> str:
        """String set when a sweep is cancelled: its batches are skipped."""
        return self.key("cancelled", sweep_id)

    def progress_channel(self, sweep_id: str) -> str:
        """Pub/sub channel a worker publishes to after each batch it commits, so waiting clients wake at once."""
        return self.key("progress", sweep_id)

    def lock(self, name: str) -> str:
        """A cluster-wide lock (candle partitions)."""
        return self.key("lock", name)

    def rate(self, scope: str) -> str:
        """The next free slot of a cluster-wide rate limit (GCRA)."""
        return self.key("rate", scope)

    def slowdown(self, scope: str) -> str:
        """How much the farm's 429s slowed a rate limit down, and when it last grew."""
        return self.key("slowdown", scope)

    def reconciled(self, sweep_id: str) -> str:
        """What a worker's watchdog last did for a stalled sweep (JSON: at, worker, jobs)."""
        return self.key("reconciled", sweep_id)

    def worker(self, name: str) -> str:
        """A live worker's presence: the strategies it can run (expires when the worker stops refreshing it)."""
        return self.key("worker", name)
