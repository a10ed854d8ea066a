"""Every Redis key of the result store: results, leaderboards, filter indexes, conflicts, sweeps and their ledgers.

Each key is ``{prefix}:{kind}`` or ``{prefix}:{kind}:{variable part}`` with the variable part last, so no job id,
sweep id or field value can make two different keys collide. The farm's own keys (attempts, cancellations, locks)
are in :mod:`backfarm.farm.keys`, the paper sessions' in :mod:`backfarm.paper.store.redis`. Types:

========================  =====  ====================================================================
key                       type   holds
========================  =====  ====================================================================
``result:{job}``          hash   ``json`` (the record), ``hash`` (its result_hash)
``done``                  set    job ids that have a result (written in the same step as the result)
``board:{metric}``        zset   member job id, score the metric value (defined values only)
``nulls:{metric}``        set    job ids whose metric is undefined (they rank last)
``index:{field}:{value}`` set    job ids whose filter field (strategy, symbol, ...) has that value
``conflicts``             list   JSON ``[job, stored_hash, new_hash, at]``, oldest first
``conflict-seen``         set    ``{job}:{new_hash}`` already recorded (one entry per distinct disagreement)
``sweeps``                zset   member sweep id, score created_at
``sweep:{id}``            hash   ``created_at``, ``spec`` (JSON), ``source``
``manifest:{id}``         set    expected job ids of a sweep
``dead:{id}``             hash   job id → reason
========================  =====  ====================================================================
"""

from __future__ import annotations

from backfarm._util.keys import KeySpace


class ResultKeys(KeySpace):
    """The result store's key names under its prefix."""

    # --- results

    def result(self, job_id: str) -> str:
        """Hash of one job's result."""
        return self.key("result", job_id)

    @property
    def done(self) -> str:
        """Set of job ids with a result."""
        return self.key("done")

    def board(self, metric: str) -> str:
        """Sorted set ranking job ids by ``metric``."""
        return self.key("board", metric)

    def nulls(self, metric: str) -> str:
        """Set of job ids whose ``metric`` is undefined."""
        return self.key("nulls", metric)

    def index(self, field: str, value: str) -> str:
        """Set of job ids whose ``field`` equals ``value``."""
        return self.key("index", field, value)

    @property
    def conflicts(self) -> str:
        """List of recorded conflicts."""
        return self.key("conflicts")

    @property
    def conflict_seen(self) -> str:
        """Set of conflicts already recorded."""
        return self.key("conflict-seen")

    # --- sweeps

    @property
    def sweeps(self) -> str:
        """Sorted set of sweep ids by creation time."""
        return self.key("sweeps")

    def sweep(self, sweep_id: str) -> str:
        """Hash describing one sweep."""
        return self.key("sweep", sweep_id)

    def manifest(self, sweep_id: str) -> str:
        """Set of a sweep's expected job ids."""
        return self.key("manifest", sweep_id)

    def dead(self, sweep_id: str) -> str:
        """Hash of a sweep's dead job ids and reasons."""
        return self.key("dead", sweep_id)
