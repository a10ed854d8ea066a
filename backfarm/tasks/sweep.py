"""From a sweep request to stored results: spec, validation, data, manifest, then only the missing jobs.

Order matters for "nothing is stored for bad input": the spec is expanded and validated, and every window's candles
are loaded (which checks availability and gaps) before the sweep is recorded or any job runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backfarm.candles.load import get_source, load_candles
from backfarm.config import Settings
from backfarm.errors import ConfigError
from backfarm.leaderboard.factory import open_store
from backfarm.leaderboard.model import SweepRecord
from backfarm.leaderboard.store import ResultStore
from backfarm.sweeps.jobs import iso
from backfarm.sweeps.spec import QUICK, Expansion, expand, load_spec_file, parse_params, spec_from, split_list
from backfarm.tasks.local import RunStats, default_workers, plan_batches, run_local, uses_pool
from backfarm.tasks.runner import CandleMemo

if TYPE_CHECKING:
    from rich.progress import Progress

    from backfarm.tasks.farm import Progress as FarmProgress


@dataclass
class SweepRequest:
    """What the user asked for, as given (``None`` = not given)."""

    strategies: str | None = None
    symbols: str | None = None
    params: list[str] = field(default_factory=list)
    grid: bool = False
    quick: bool = False
    days: int | None = None
    start: str | None = None
    end: str | None = None
    granularity: str | None = None
    window: str | None = None
    step: str | None = None
    fee_bps: float | None = None
    spread_bps: float | None = None
    slippage_bps: float | None = None
    stop_loss_bps: float | None = None
    take_profit_bps: float | None = None
    capital: float | None = None
    source: str | None = None
    spec_file: Path | None = None
    curves: bool = True
    """Store every result's equity curve and trades (not part of the sweep: the same jobs, stored leaner)."""


@dataclass
class SweepOutcome:
    """A finished (or interrupted) sweep run."""

    sweep_id: str
    expansion: Expansion
    store: ResultStore
    stats: RunStats
    reused: int
    workers: int

    @property
    def total(self) -> int:
        """Jobs in the sweep."""
        return len(self.expansion.jobs)

    @property
    def done(self) -> int:
        """Jobs with a stored result."""
        info = self.store.sweep(self.sweep_id)
        return info.done if info else 0

    @property
    def dead(self) -> int:
        """Jobs that failed."""
        return self.stats.failed


def build_expansion(request: SweepRequest, settings: Settings) -> Expansion:
    """Spec from file and flags, validated and expanded (raises user errors; touches no store)."""
    base: dict[str, Any] = load_spec_file(request.spec_file) if request.spec_file else {}
    if request.quick:
        base = {**base, **{k: v for k, v in QUICK.items()}}
    spec = spec_from(
        base,
        strategies=split_list(request.strategies) or None,
        symbols=split_list(request.symbols) or None,
        params=parse_params(request.params) or None,
        grid=request.grid or None,
        days=request.days,
        start=request.start,
        end=request.end,
        granularity=request.granularity,
        window=request.window,
        step=request.step,
        fee_bps=request.fee_bps,
        spread_bps=request.spread_bps,
        slippage_bps=request.slippage_bps,
        stop_loss_bps=request.stop_loss_bps,
        take_profit_bps=request.take_profit_bps,
        capital=request.capital,
        source=request.source,
    )
    source = get_source(spec.source, settings)
    return expand(spec, validate_symbol=source.validate_symbol)


def prepare_data(expansion: Expansion, settings: Settings, memo: CandleMemo | None = None) -> None:
    """Load every symbol's candles for the whole period: fetches what is missing, and fails early (with what is
    available) on windows outside the data or with too many gaps. Single-window sweeps seed ``memo``."""
    spec = expansion.spec
    source = get_source(spec.source, settings)
    start, end = expansion.windows[0][0], expansion.windows[-1][1]
    for symbol in dict.fromkeys(j.symbol for j in expansion.jobs):
        candles = load_candles(settings, source, symbol, spec.granularity, start, end)
        if memo is not None and len(expansion.windows) == 1:
            memo.put((spec.source, symbol, spec.granularity, iso(start), iso(end)), candles)


def sweep_record(expansion: Expansion, curves: bool = True) -> SweepRecord:
    """The manifest entry of a sweep: its spec with the exact period (and ``"curves": false`` when results keep no
    curves, so a re-enqueue builds the same kind of results; the sweep id does not depend on it), and every expected
    job id."""
    spec = expansion.spec.to_dict()
    spec["period"] = [iso(expansion.windows[0][0]), iso(expansion.windows[-1][1])]
    if not curves:
        spec["curves"] = False
    job_ids = tuple(job.job_id for job in expansion.jobs)
    return SweepRecord(expansion.sweep_id, time.time(), spec, job_ids, expansion.spec.source)


def run_sweep(
    request: SweepRequest, settings: Settings, workers: int | None = None, progress: Progress | None = None
) -> SweepOutcome:
    """Validate, record the sweep, run the jobs the store does not have yet, and return the outcome."""
    expansion = build_expansion(request, settings)
    memo = CandleMemo(settings)
    prepare_data(expansion, settings, memo)
    store = open_store(settings)
    sweep_id = expansion.sweep_id
    job_ids = tuple(j.job_id for j in expansion.jobs)
    store.create_sweep(sweep_record(expansion, request.curves))
    existing = store.existing(job_ids)
    todo = [j for j in expansion.jobs if j.job_id not in existing]
    n_workers = workers or default_workers()
    batches = plan_batches(todo, n_workers, curves=request.curves)
    task = None
    if progress is not None and todo:
        progress.start()
        task = progress.add_task("backtests", total=len(todo), rate="")
    started = time.perf_counter()
    finished = [0]

    def on_progress(count: int, failed: int) -> None:
        finished[0] += count
        if progress is not None and task is not None:
            elapsed = max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=count, rate=f"{finished[0] / elapsed:,.0f}/s")

    stats = run_local(batches, store, settings, sweep_id, n_workers, on_progress, memo)
    used = min(n_workers, len(batches)) if uses_pool(len(todo), len(batches), n_workers) else 1
    return SweepOutcome(sweep_id, expansion, store, stats, reused=len(existing), workers=used)


def submit_sweep(
    request: SweepRequest,
    settings: Settings,
    detach: bool = False,
    on_update: Callable[[FarmProgress], None] | None = None,
) -> SweepOutcome:
    """The farm path (``settings.redis_url`` set): validate, check Redis, prepare the data as the embedded path
    does, record the manifest and enqueue the missing jobs, then wait for the farm unless ``detach``.

    An interrupt while waiting leaves the sweep running on the farm (``stats.interrupted``).
    """
    from backfarm.errors import ServiceUnavailable
    from backfarm.tasks import farm
    from backfarm.workers.app import close_app, create_app

    expansion = build_expansion(request, settings)
    farm.preflight(settings)
    try:
        store = open_store(settings)
    except ServiceUnavailable as exc:
        raise ConfigError(str(exc)) from None
    prepare_data(expansion, settings)
    reused = len(store.existing(j.job_id for j in expansion.jobs))
    app = create_app(settings)
    stats = RunStats()
    last: list[FarmProgress] = []

    def update(p: FarmProgress) -> None:
        last[:] = [p]
        if on_update is not None:
            on_update(p)

    try:
        sweep_id = farm.submit(expansion, settings, store, app, curves=request.curves)  # type: ignore[arg-type]
        outcome = SweepOutcome(sweep_id, expansion, store, stats, reused=reused, workers=0)
        if detach:
            return outcome
        started = time.perf_counter()
        try:
            final = farm.wait(sweep_id, settings, store, app, on_update=update)  # type: ignore[arg-type]
        except KeyboardInterrupt:
            stats.interrupted = True
            final = last[0] if last else farm.progress(store, sweep_id)  # type: ignore[arg-type]
    finally:
        close_app(app)
    stats.seconds = final.elapsed_s if final.complete else time.perf_counter() - started
    stats.computed = max(0, final.done - reused)
    stats.failed = final.dead
    outcome.workers = len(final.workers or [])
    return outcome
