"""The farm's own bookkeeping in Redis: attempt counters, cancellations, progress announcements and queue lengths.

A sweep's manifest, its done and dead sets belong to the result store (both stores keep them, and the store writes
the done mark in the same step as the result); what only the farm needs is here, on the keys of
:mod:`backfarm.farm.keys`. Every call maps Redis failures to backfarm's errors (:class:`RedisConnection.guard`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backfarm._util.connection import RedisConnection
from backfarm._util.keys import DEFAULT_PREFIX
from backfarm.farm.keys import QUEUES, UNACKED, FarmKeys

# KEYS: attempts hash; ARGV: job ids. Returns each job's new attempt count.
_ATTEMPT_MANY = """
local counts = {}
for i, job in ipairs(ARGV) do counts[i] = redis.call('HINCRBY', KEYS[1], job, 1) end
return counts
"""


class Ledger:
    """Attempts, cancellations, progress messages and queue lengths of the farm, on ``conn``."""

    def __init__(self, conn: RedisConnection, prefix: str = DEFAULT_PREFIX) -> None:
        self.conn = conn
        self.keys = FarmKeys(prefix)
        self._attempt_many = conn.client.register_script(_ATTEMPT_MANY)

    def __repr__(self) -> str:
        return f"Ledger({self.conn.safe_url!r}, prefix={self.keys.prefix!r})"

    def prior(self, sweep_id: str, job_ids: Sequence[str]) -> tuple[bool, list[int]]:
        """Whether the sweep is cancelled, and how often each job was attempted before (one round trip)."""
        with self.conn.guard():
            pipe = self.conn.client.pipeline(transaction=False)
            pipe.exists(self.keys.cancelled(sweep_id))
            pipe.hmget(self.keys.attempts(sweep_id), list(job_ids))
            cancelled, counts = pipe.execute()
        return bool(cancelled), [int(n or 0) for n in counts]

    def attempt(self, sweep_id: str, job_id: str) -> int:
        """Count one more attempt at ``job_id`` in ``sweep_id``; returns the new count."""
        with self.conn.guard():
            return int(self.conn.client.hincrby(self.keys.attempts(sweep_id), job_id, 1))

    def attempt_many(self, sweep_id: str, job_ids: Sequence[str]) -> list[int]:
        """:meth:`attempt` for every job of ``job_ids`` in one step (one command, not a pipeline of one per job)."""
        if not job_ids:
            return []
        with self.conn.guard():
            counts = self._attempt_many(keys=[self.keys.attempts(sweep_id)], args=list(job_ids))
        return [int(n) for n in counts]

    def attempts(self, sweep_id: str) -> dict[str, int]:
        """Attempt counts of a sweep's jobs (jobs never attempted are absent)."""
        with self.conn.guard():
            counts = self.conn.client.hgetall(self.keys.attempts(sweep_id))
        return {str(job): int(counts[job]) for job in sorted(counts)}

    def cancel(self, sweep_id: str, reason: str) -> None:
        """Mark the sweep cancelled: workers skip its batches from now on."""
        with self.conn.guard():
            self.conn.client.set(self.keys.cancelled(sweep_id), reason)

    def is_cancelled(self, sweep_id: str) -> bool:
        """Whether the sweep was cancelled."""
        with self.conn.guard():
            return bool(self.conn.client.exists(self.keys.cancelled(sweep_id)))

    def announce(self, sweep_id: str, message: str) -> None:
        """Publish ``message`` to the clients waiting on the sweep (a hint: nobody may be listening)."""
        with self.conn.guard():
            self.conn.client.publish(self.keys.progress_channel(sweep_id), message)

    def subscribe(self, sweep_id: str) -> Any:
        """A pub/sub object subscribed to the sweep's progress messages (the caller closes it)."""
        with self.conn.guard():
            pubsub = self.conn.client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(self.keys.progress_channel(sweep_id))
        return pubsub

    def queue_lengths(self) -> dict[str, int]:
        """Messages waiting in each farm queue, and those delivered but not yet acknowledged (``unacked``)."""
        with self.conn.guard():
            pipe = self.conn.client.pipeline(transaction=False)
            for name in QUEUES:
                pipe.llen(name)
            pipe.hlen(UNACKED)
            lengths = pipe.execute()
        return {**dict(zip(QUEUES, lengths[:-1], strict=True)), UNACKED: lengths[-1]}
