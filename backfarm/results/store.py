"""The result-store contract: :class:`ResultReader` (queries) and :class:`ResultStore` (queries and writes). The
embedded store and the Redis store implement it identically."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Self

from backfarm.core.results import AggregateRow, Conflict, Filters, PutReport, ResultRecord, SweepInfo, SweepRecord

if TYPE_CHECKING:  # readers never load Arrow (see backfarm.results.duck); only writers hand tables over
    import pyarrow as pa


class ResultReader(ABC):
    """Results keyed by job id, sweeps with manifests, rankings and aggregates: what a read-only command needs.

    Rules every implementation keeps:

    - ``put`` is idempotent: the same record twice is one row; a record whose ``result_hash`` differs from the stored
      one for the same job id is a *conflict*: the original is kept and the conflict recorded.
    - A result belongs to every sweep whose manifest lists its job id, so a job done in an earlier sweep counts as
      done in a later one without being recomputed.
    - Rankings put ``None`` (undefined) metric values last, whatever the direction; ties break by job id.
    """

    @abstractmethod
    def get(self, job_id: str) -> ResultRecord | None:
        """One result by job id."""

    @abstractmethod
    def existing(self, job_ids: Iterable[str]) -> set[str]:
        """The subset of ``job_ids`` that already have a result."""

    @abstractmethod
    def pending(self, sweep_id: str) -> list[str]:
        """Expected job ids of a sweep that are neither done nor dead, sorted."""

    @abstractmethod
    def dead(self, sweep_id: str) -> dict[str, str]:
        """Dead job ids of a sweep with their reasons."""

    @abstractmethod
    def sweep(self, sweep_id: str) -> SweepInfo | None:
        """One sweep with its progress (a unique prefix of the id is accepted)."""

    @abstractmethod
    def sweeps(self) -> list[SweepInfo]:
        """All sweeps, newest first."""

    @abstractmethod
    def manifest(self, sweep_id: str) -> list[str]:
        """The expected job ids of a sweep."""

    @abstractmethod
    def top(
        self,
        metric: str,
        n: int,
        filters: Filters | None = None,
        ascending: bool | None = None,
        pictures: bool = True,
    ) -> list[ResultRecord]:
        """The best ``n`` results by ``metric`` (direction from :func:`metric_order` unless ``ascending`` is given);
        ``pictures=False``: without the curves and trade lists in ``extra`` (what a table shows, read faster)."""

    @abstractmethod
    def iter_results(self, filters: Filters | None = None) -> Iterator[ResultRecord]:
        """Every result passing ``filters``, each once, streamed: in an order of the store's choosing (by job id
        where an index gives it cheaply, else as stored: sort what you need sorted)."""

    @abstractmethod
    def aggregate(self, by: str, filters: Filters | None = None) -> list[AggregateRow]:
        """Summaries grouped by ``strategy`` or ``symbol``, sorted by key."""

    @abstractmethod
    def conflicts(self) -> list[Conflict]:
        """Every recorded conflict, oldest first."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResultStore(ResultReader):
    """A :class:`ResultReader` that stores results and sweeps too."""

    @abstractmethod
    def put(self, results: Sequence[ResultRecord] | pa.Table) -> PutReport:
        """Store results, given as records or as one table of :mod:`backfarm.results.columns` (idempotent;
        conflicts recorded, never overwritten)."""

    @abstractmethod
    def create_sweep(self, sweep: SweepRecord) -> bool:
        """Record a sweep and its manifest; returns False (and changes nothing) if it already exists."""

    @abstractmethod
    def mark_dead(self, sweep_id: str, job_ids: str | Sequence[str], reason: str) -> None:
        """Give up on one job (or several) of a sweep, keeping the reason (the latest wins)."""

    @abstractmethod
    def incomplete(self, filters: Filters | None = None) -> Iterator[tuple[object, list[ResultRecord]]]:
        """Backtest results passing ``filters`` that were stored without the moments of their bar returns and
        their daily returns (by backfarm before 0.3), as (unit, records without pictures) pages: consecutive pages
        of one unit (an embedded part, a Redis chunk) are best completed by one :meth:`fill_in`."""

    @abstractmethod
    def fill_in(self, results: pa.Table) -> int:
        """Give stored results the moments and daily returns they lack, from ``results`` (a table of
        :mod:`backfarm.results.columns`: the same jobs recomputed). Only results stored without them and whose
        result hash equals the recomputation's are touched; nothing else of a result changes. How many were
        filled in."""
