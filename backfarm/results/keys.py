"""Every Redis key of the result store: result chunks and what finds them, conflicts, sweeps and their ledgers.

Each key is ``{prefix}:{kind}`` or ``{prefix}:{kind}:{variable part}`` with the variable part last, so no job id,
sweep id or field value can make two different keys collide. The farm's own keys (attempts, cancellations, locks)
are in :mod:`backfarm.farm.keys`, the paper sessions' in :mod:`backfarm.paper.store.redis_store`. Types:

==========================  =====  =================================================================================
key                         type   holds
==========================  =====  =================================================================================
``chunk-seq``               str    the last chunk number given out
``chunk:{n}``               hash   one commit's results: ``facts``, ``pictures`` (:mod:`backfarm.results.packed`),
                                   ``live`` (``1``/``0`` per row: whether the row is the stored result of its job)
``chunks``                  set    every chunk number
``jobs``                    hash   job id → ``{chunk}:{row}:{result hash}`` (where its result is, and which it is)
``done``                    set    job ids that have a result (written in the same step as the result)
``zlo:{metric}``            zset   per chunk ``{best row's key ascending}:{chunk}`` (:func:`backfarm.results.packed.
                                   row_key`), all scores 0: read in lexicographic order, best chunk first
``zhi:{metric}``            zset   the same, descending
``znull:{metric}``          set    chunk numbers where some row leaves the metric undefined
``cindex:{field}:{value}``  set    chunk numbers holding rows whose filter field has that value
``conflicts``               list   JSON ``[job, stored_hash, new_hash, at]``, oldest first
``conflict-seen``           set    ``{job}:{new_hash}`` already recorded (one entry per distinct disagreement)
``sweeps``                  zset   member sweep id, score created_at
``sweep:{id}``              hash   ``created_at``, ``spec`` (JSON), ``source``
``manifest:{id}``           set    expected job ids of a sweep
``dead:{id}``               hash   job id → reason
==========================  =====  =================================================================================

Stores of backfarm 0.1 kept one hash per result (``result:{job}``), one sorted set of job ids per metric
(``board:{metric}``, ``nulls:{metric}``) and a set of job ids per filter value (``index:{field}:{value}``):
:meth:`ResultKeys.legacy_patterns` names them for ``backfarm store migrate``.
"""

from __future__ import annotations

from backfarm._util.keys import KeySpace


class ResultKeys(KeySpace):
    """The result store's key names under its prefix."""

    # --- results

    @property
    def chunk_seq(self) -> str:
        """Counter of chunk numbers."""
        return self.key("chunk-seq")

    def chunk(self, number: int | str) -> str:
        """Hash of one chunk."""
        return self.key("chunk", str(number))

    @property
    def chunks(self) -> str:
        """Set of every chunk number."""
        return self.key("chunks")

    @property
    def jobs(self) -> str:
        """Hash of job id → where its result is."""
        return self.key("jobs")

    @property
    def done(self) -> str:
        """Set of job ids with a result."""
        return self.key("done")

    def bounds(self, metric: str, ascending: bool) -> str:
        """Sorted set (lexicographic) of the chunks by their best row's key for ``metric`` in that direction."""
        return self.key("zlo" if ascending else "zhi", metric)

    def znull(self, metric: str) -> str:
        """Set of chunks where some row leaves ``metric`` undefined."""
        return self.key("znull", metric)

    def cindex(self, field: str, value: str) -> str:
        """Set of chunks holding rows whose ``field`` equals ``value``."""
        return self.key("cindex", field, value)

    @property
    def conflicts(self) -> str:
        """List of recorded conflicts."""
        return self.key("conflicts")

    @property
    def conflict_seen(self) -> str:
        """Set of conflicts already recorded."""
        return self.key("conflict-seen")

    def legacy_patterns(self) -> list[str]:
        """``SCAN`` patterns of the keys of the 0.1 layout (results, boards, null sets, index sets)."""
        return [self.key(kind, "*") for kind in ("result", "board", "nulls", "index")]

    def legacy_result(self, job_id: str) -> str:
        """Hash of one result in the 0.1 layout."""
        return self.key("result", job_id)

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
