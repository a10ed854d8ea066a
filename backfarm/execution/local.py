"""The embedded executor: batches on a local pool of forked processes, results committed as they are computed.

The pool is forked after the parent has warmed the numba kernels up and loaded the sweep's candles, so children
start hot and share the candle arrays (copy-on-write) instead of each reading them again. The batches stay in the
parent's memory too: a child takes the next batch *index* from a shared counter, so no job is ever serialised
(encoding and decoding a job costs more than running half a backtest). Each child keeps the indicators it computes
per window, and batches are grouped by window and strategy so one process builds each indicator set.

The parent is one of the workers: with N workers it forks N - 1 children and takes batches itself, handling the
children's messages between its own batches (waiting for them instead would leave a core idle, and every fork copies
the parent's page tables). A child that has committed everything says so and is left to exit on its own.

Results are committed a few hundred at a time, or at least every second (each commit is one part file and one index
transaction): an interrupt loses at most that much work per process, and rerunning the same command computes only
what is missing. With the embedded store every process commits its own results through its own connection (the
index runs in WAL mode with a busy timeout, so the processes take turns); only counts and failures travel back, and
the parent marks failed jobs dead and reports progress. Any other store gets the children's records back, in the
same portions, and the parent commits them.
"""

from __future__ import annotations

import gc
import json
import math
import multiprocessing
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import pyarrow as pa

from backfarm import errors
from backfarm._util.cpu import default_workers
from backfarm.candles.memo import CandleMemo
from backfarm.config import Settings
from backfarm.core.jobs import Batch, DataKey, Job
from backfarm.execution.executor import RunStats, SweepWork
from backfarm.execution.runner import BatchOutcome, run_batch, warm_up
from backfarm.results import columns
from backfarm.results.embedded import EmbeddedStore
from backfarm.results.store import ResultStore

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

INLINE_MAX_JOBS = 64
"""Below this many jobs, forking a pool costs more than it saves: run in the calling process."""
BATCHES_PER_WORKER = 8
"""Batches per worker process the planner aims for: enough that the last one to finish leaves little idle time."""
MIN_BATCH, MAX_BATCH = 8, 256
"""Bounds on jobs per batch (the unit a process takes, and the granularity of load balancing)."""
COMMIT_ROWS = 2000
"""A pool process commits once it holds this many results (fewer, larger transactions: see :func:`_child`)..."""
COMMIT_EVERY_S = 1.0
"""...or once this long has passed since its last commit, so an interrupt loses little and progress keeps moving."""

Progress = Callable[[int, int], None]
"""Called with (jobs just finished — stored or failed —, how many of them failed), as results are committed."""


@dataclass
class _Shared:
    """What forked children inherit from the parent instead of receiving it in messages."""

    batches: Sequence[Batch]
    memo: CandleMemo
    store_path: Path | None
    """The embedded store children commit to themselves, or ``None``: results go back to the parent."""


class ProgressSink(Protocol):
    """Where the executor reports progress (the CLI's progress bar)."""

    def start(self, total: int) -> None:
        """``total`` jobs are about to run (called only when there are any)."""

    def advance(self, jobs: int, failed: int) -> None:
        """``jobs`` more finished (stored or failed), ``failed`` of them failed."""


class LocalExecutor:
    """The embedded executor: runs the sweep's missing jobs on ``workers`` processes of this machine (default: all
    cores; small sweeps run in-process) and commits them to the store as they finish."""

    def __init__(self, settings: Settings, workers: int | None = None, progress: ProgressSink | None = None) -> None:
        self.settings = settings
        self.workers = workers or default_workers()
        self.progress = progress
        self.memo: CandleMemo | None = CandleMemo(settings)

    def run(self, work: SweepWork, store: ResultStore) -> RunStats:
        """Plan the batches, run them (:func:`run_local`) and return what happened."""
        batches = plan_batches(work.todo, self.workers, curves=work.curves)
        on_progress = None
        if self.progress is not None and work.todo:
            self.progress.start(len(work.todo))
            on_progress = self.progress.advance
        stats = run_local(batches, store, self.settings, work.sweep_id, self.workers, on_progress, self.memo)
        pooled = uses_pool(len(work.todo), len(batches), self.workers)
        stats.workers = min(self.workers, len(batches)) if pooled else 1
        return stats


def plan_batches(jobs: Sequence[Job], workers: int, curves: bool = True) -> list[Batch]:
    """Batches for this executor: jobs grouped by window *and strategy*, each group cut into near-equal pieces.

    Grouping by strategy means each process computes a strategy's indicators for a window once (two processes
    working on the same window would otherwise each build the same indicator set). The pieces are sized so there
    are about :data:`BATCHES_PER_WORKER` batches per worker, which keeps the last batch's tail short. Job order
    inside a group is kept.
    """
    groups: dict[tuple[DataKey, str], list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.data_key, job.strategy), []).append(job)
    target = max(MIN_BATCH, min(MAX_BATCH, math.ceil(len(jobs) / max(1, workers * BATCHES_PER_WORKER))))
    batches: list[Batch] = []
    for group in groups.values():
        pieces = math.ceil(len(group) / target)
        cuts = [len(group) * k // pieces for k in range(pieces + 1)]  # sizes differ by at most one
        batches.extend(Batch(tuple(group[a:b]), curves=curves) for a, b in zip(cuts, cuts[1:], strict=False))
    return batches


def run_local(
    batches: Sequence[Batch],
    store: ResultStore,
    settings: Settings,
    sweep_id: str | None,
    workers: int,
    on_progress: Progress | None = None,
    memo: CandleMemo | None = None,
) -> RunStats:
    """Run ``batches`` and put their results into ``store``; failures are marked dead in ``sweep_id``."""
    stats = RunStats()
    started = time.perf_counter()
    jobs = sum(len(b.jobs) for b in batches)
    try:
        with _quiet_collector():
            if uses_pool(jobs, len(batches), workers):
                _run_pool(batches, store, settings, sweep_id, workers, stats, on_progress, memo)
            else:
                _run_inline(batches, store, settings, sweep_id, stats, on_progress, memo)
    except KeyboardInterrupt:
        stats.interrupted = True
    stats.seconds = time.perf_counter() - started
    return stats


@contextmanager
def _quiet_collector() -> Iterator[None]:
    """Keep Python's cycle collector off the objects that exist before the run (about 10 % of a batch's time
    otherwise goes to traversing the interpreter's long-lived objects; forked children also stop dirtying the
    pages they share with the parent) and let it run rarely: a batch creates many containers but few cycles."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def uses_pool(jobs: int, batches: int, workers: int) -> bool:
    """Whether :func:`run_local` forks a pool for this much work (else it runs in the calling process)."""
    return workers > 1 and jobs > INLINE_MAX_JOBS and batches > 1


def _commit(
    results: pa.Table | int,
    failed: dict[str, str],
    store: ResultStore,
    sweep_id: str | None,
    stats: RunStats,
    on_progress: Progress | None,
) -> None:
    """Store results (unless a child already did: then ``results`` is their count) and mark failures dead."""
    if isinstance(results, int):
        done = results
    else:
        done = results.num_rows
        if done:
            store.put(results)
    if sweep_id:
        for job_id, reason in failed.items():
            store.mark_dead(sweep_id, job_id, reason)
    stats.computed += done
    stats.failed += len(failed)
    if on_progress:
        on_progress(done + len(failed), len(failed))


def _run_inline(
    batches: Sequence[Batch],
    store: ResultStore,
    settings: Settings,
    sweep_id: str | None,
    stats: RunStats,
    on_progress: Progress | None,
    memo: CandleMemo | None,
) -> None:
    memo = memo or CandleMemo(settings)
    _work_here((run_batch(batch, memo) for batch in batches), _committer(store, sweep_id, stats, on_progress))


_NONE = columns.SCHEMA.empty_table()
"""No results (failures travel alone)."""

Commit = Callable[[pa.Table, dict[str, str]], None]
"""Where :func:`_work_here` hands (results, failures): the parent stores them, a child stores or sends them."""


def _committer(store: ResultStore, sweep_id: str | None, stats: RunStats, on_progress: Progress | None) -> Commit:
    """The parent's :data:`Commit`: :func:`_commit` into ``store``."""
    return lambda results, failed: _commit(results, failed, store, sweep_id, stats, on_progress)


def _work_here(outcomes: Iterator[BatchOutcome], commit: Commit, between: Callable[[], None] | None = None) -> None:
    """Run batches in this process, committing results in transactions of at least :data:`COMMIT_ROWS` rows or
    every :data:`COMMIT_EVERY_S` (most of an insert's cost is rewriting the index pages it touches, once per
    transaction), failures at once; ``between`` runs after each batch."""
    pending: list[pa.Table] = []
    rows = 0
    flushed = time.monotonic()
    for outcome in outcomes:
        pending.append(outcome.results)
        rows += outcome.results.num_rows
        if outcome.failed:
            commit(_NONE, outcome.failed)
        if rows >= COMMIT_ROWS or time.monotonic() - flushed >= COMMIT_EVERY_S:
            commit(pa.concat_tables(pending), {})
            pending, rows = [], 0
            flushed = time.monotonic()
        if between is not None:
            between()
    if rows:
        commit(pa.concat_tables(pending), {})


def _run_pool(
    batches: Sequence[Batch],
    store: ResultStore,
    settings: Settings,
    sweep_id: str | None,
    workers: int,
    stats: RunStats,
    on_progress: Progress | None,
    memo: CandleMemo | None,
) -> None:
    """``workers`` processes take batches in turn: ``workers - 1`` forked children and this process itself (which
    would otherwise sit idle waiting for them, and one fewer fork is one fewer copy of a large address space)."""
    warm_up()  # children forked after this inherit loaded kernels
    store_path = store.root if isinstance(store, EmbeddedStore) else None
    shared = _Shared(batches, memo or CandleMemo(settings), store_path)
    shared.memo.prepare_for_fork()
    context = multiprocessing.get_context("fork")
    counter = context.Value("q", 0)
    children: dict[Connection, BaseProcess] = {}
    try:
        for _ in range(min(workers, len(batches)) - 1):
            reader, writer = context.Pipe(duplex=False)
            child = context.Process(target=_child, args=(shared, counter, writer), daemon=True)
            child.start()  # forked: ``shared`` is inherited, never serialised
            writer.close()
            children[reader] = child
        receive = _Receiver(children, store, sweep_id, stats, on_progress)
        commit = _committer(store, sweep_id, stats, on_progress)
        # The children's progress and errors are handled between this process's own batches.
        _work_here(_take(shared, counter), commit, lambda: receive(block=False))
        while children:
            receive(block=True)
    except BaseException:
        for process in children.values():
            process.terminate()
        for process in children.values():
            process.join()
        raise


class _Receiver:
    """The parent's side of the children's pipes."""

    def __init__(
        self,
        children: dict[Connection, BaseProcess],
        store: ResultStore,
        sweep_id: str | None,
        stats: RunStats,
        on_progress: Progress | None,
    ) -> None:
        self.children = children
        self.store, self.sweep_id, self.stats, self.on_progress = store, sweep_id, stats, on_progress

    def __call__(self, block: bool) -> None:
        """Handle every message that is waiting (with ``block``, at least one event); forget finished children."""
        for ready in wait(list(self.children), timeout=None if block else 0):
            conn = cast(Connection, ready)
            self._one(conn)
            while conn in self.children and conn.poll():  # a "finished" child's pipe is closed and forgotten
                self._one(conn)

    def _one(self, conn: Connection) -> None:
        try:
            kind, payload, failed = json.loads(conn.recv_bytes())
            if kind == "results":  # the table follows as Arrow IPC bytes
                payload = pa.ipc.open_stream(conn.recv_bytes()).read_all()
        except EOFError:  # closed without saying it finished: the process died
            process = self.children.pop(conn)
            process.join()
            raise RuntimeError(f"an executor process died (exit code {process.exitcode})") from None
        if kind == "error":
            raise _error_from(payload)
        if kind == "finished":
            # Every result is committed: the parent carries on while the process exits (tearing down a large address
            # space takes ~10 ms); multiprocessing reaps it at the next start or at exit.
            self.children.pop(conn)
            conn.close()
            return
        _commit(payload, failed, self.store, self.sweep_id, self.stats, self.on_progress)


def _send(conn: Connection, kind: str, payload: object, failed: dict[str, str]) -> None:
    """Child → parent messages are JSON, like every other message in backfarm; results follow as Arrow IPC (data,
    not code: no object is ever rebuilt from bytes)."""
    if isinstance(payload, pa.Table):
        conn.send_bytes(json.dumps([kind, None, failed]).encode())
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, payload.schema) as writer:
            writer.write_table(payload)
        conn.send_bytes(sink.getvalue().to_pybytes())
        return
    conn.send_bytes(json.dumps([kind, payload, failed]).encode())


def _take(shared: _Shared, counter: Synchronized[int]) -> Iterator[BatchOutcome]:
    """Run batches in the order the shared counter hands them out, until none is left."""
    while (index := _next_index(counter)) < len(shared.batches):
        yield run_batch(shared.batches[index], shared.memo)


def _child(shared: _Shared, counter: Synchronized[int], conn: Connection) -> None:
    """A pool process: take batches in order until none is left, committing as :func:`_work_here` does, to the
    embedded store itself (the parent hears the counts) or, with any other store, by sending the records."""
    # The parent handles Ctrl-C; children must not die mid-write with a KeyboardInterrupt traceback. SIGTERM is how
    # the parent stops them: its default action, whatever handler the parent had when it forked.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    store = EmbeddedStore(shared.store_path) if shared.store_path is not None else None

    def commit(results: pa.Table, failed: dict[str, str]) -> None:
        if store is None:
            _send(conn, "results", results, failed)
            return
        if results.num_rows:
            store.put(results)
        _send(conn, "stored", results.num_rows, failed)

    try:
        _work_here(_take(shared, counter), commit)
        _send(conn, "finished", 0, {})
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        _send(conn, "error", {"type": type(exc).__name__, "message": str(exc)}, {})
    finally:
        conn.close()
        if store is not None:
            store.close()


def _next_index(counter: Synchronized[int]) -> int:
    with counter.get_lock():
        index = counter.value
        counter.value = index + 1
    return index


def _error_from(payload: dict[str, str]) -> BaseException:
    """Rebuild a child's error: backfarm's own errors keep their class (and so their exit code), others name theirs."""
    cls = getattr(errors, payload["type"], None)
    if isinstance(cls, type) and issubclass(cls, errors.BackfarmError):
        return cls(payload["message"])
    if payload["type"] == "KeyboardInterrupt":
        return KeyboardInterrupt()
    return RuntimeError(f"{payload['type']}: {payload['message']}")
