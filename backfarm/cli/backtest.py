"""``backfarm backtest``: validate a sweep, run what is missing, print the leaderboard and the per-strategy table."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from backfarm.cli import options, state
from backfarm.cli.output import aggregate_table, source_label, top_table
from backfarm.config import Settings
from backfarm.core.formatting import count, per_second
from backfarm.core.results import Filters
from backfarm.errors import ValidationError

# Commands import what they run inside their bodies, so `backfarm --help` stays fast (no engine, store or Celery).

if TYPE_CHECKING:
    from backfarm.results.store import ResultStore
    from backfarm.sweeps.run import SweepOutcome
    from backfarm.sweeps.spec import SweepSpec

TOP_DEFAULT = 10


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""
    app.command("backtest")(backtest)
    app.command("compile")(compile_kernels)


def compile_kernels() -> None:
    """Compile the engine's kernels now, so the first backtest does not wait (`make install` runs this)."""
    from backfarm.execution.runner import kernels_compiled, warm_up

    if kernels_compiled():
        state.console.print("the kernels are compiled (numba's cache is current)")
        return
    started = time.perf_counter()
    with state.err_console.status("compiling the engine's kernels (numba, once per install) ..."):
        warm_up()
    state.console.print(f"compiled the engine's kernels in {time.perf_counter() - started:.0f} s")


def backtest(
    ctx: typer.Context,
    strategies: options.Strategies = None,
    symbols: options.Symbols = None,
    params: options.ParamSets = None,
    grid: options.Grid = False,
    quick: options.Quick = False,
    days: options.Days = None,
    start: options.Start = None,
    end: options.End = None,
    granularity: options.Granularity = None,
    window: options.Window = None,
    step: options.Step = None,
    fee_bps: options.FeeBps = None,
    spread_bps: options.SpreadBps = None,
    slippage_bps: options.SlippageBps = None,
    stop_loss_bps: options.StopLossBps = None,
    take_profit_bps: options.TakeProfitBps = None,
    capital: options.Capital = None,
    source: options.Source = None,
    spec_file: options.SpecFile = None,
    strategy_path: options.StrategyPath = None,
    allow_lookahead: options.AllowLookahead = False,
    workers: Annotated[int | None, typer.Option(help="Local processes (default: all cores).")] = None,
    top: Annotated[int, typer.Option(help="Rows of the leaderboard to print.")] = TOP_DEFAULT,
    detach: Annotated[
        bool, typer.Option("--detach", help="Farm only: submit, print the sweep id and return without waiting.")
    ] = False,
    curves: Annotated[
        bool,
        typer.Option(
            "--curves/--no-curves",
            help="Store each result's equity curve and trades (--no-curves: ~6x smaller results, ~25% faster; "
            "the dashboard recomputes a curve when one is opened).",
        ),
    ] = True,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Validate and expand the sweep, print its counts and stop: no candles are fetched, "
            "nothing is run or stored.",
        ),
    ] = False,
) -> None:
    """Run a sweep: strategies × parameters × symbols × windows. With no options: the 5 built-ins with default
    parameters on BTC/ETH/SOL/LINK/POL-USD over the last 30 days of 1-minute candles (25 backtests)."""
    if workers is not None and workers < 1:
        raise ValidationError(f"--workers must be at least 1, got {workers}")
    if top < 0:
        raise ValidationError(f"--top must be >= 0, got {top}")
    settings = state.settings()
    farm = bool(settings.redis_url)
    if farm and workers is not None:
        raise ValidationError("--workers sizes the local executor; on the farm, size `backfarm worker --concurrency`")
    if detach and not farm:
        raise ValidationError("--detach needs the farm: set BACKFARM_REDIS_URL or pass --redis URL")
    from backfarm.execution.local import LocalExecutor
    from backfarm.execution.runner import kernels_compiled
    from backfarm.results.factory import open_store
    from backfarm.sweeps.run import run_sweep
    from backfarm.sweeps.spec import SweepSpec

    state.load_strategy_files(strategy_path)
    # The options that are spec fields, by name: the Typer parameter is the flag's only declaration.
    flags = {name: value for name, value in ctx.params.items() if name in SweepSpec.__dataclass_fields__}
    spec = SweepSpec.from_flags(flags, spec_file=spec_file, quick=quick)
    if dry_run:
        _dry_run(spec, settings)
        return
    from backfarm.sweeps.lookahead import gate

    gate(settings, spec.strategies, allow=allow_lookahead, announce=state.err_console.print)
    started = time.perf_counter()
    with open_store(settings) as store, _sigterm_as_interrupt() as terminated:
        if farm:
            _farm_backtest(spec, settings, store, detach, top, curves, terminated)
            return
        if not kernels_compiled():
            state.err_console.print(
                "compiling the engine's kernels first (numba, once per install: ~20 s; `backfarm compile` does it "
                "ahead of time)"
            )
        with _Bar() as bar:  # shown only once there is work, so errors print without a blank line
            outcome = run_sweep(spec, settings, store, LocalExecutor(settings, workers, bar), curves=curves)
        _report(outcome, store, top, time.perf_counter() - started)
        if not outcome.stats.interrupted:
            _exit_if_failed(outcome, store)
        if outcome.stats.interrupted:
            info = store.sweep(outcome.sweep_id)
            state.err_console.print(
                f"{'terminated' if terminated else 'interrupted'}: {info.done if info else 0:,} of "
                f"{count(outcome.total, 'job')} are stored; run the same command again to finish"
            )
            raise typer.Exit(code=_stop_code(terminated))


class _Signals(list[int]):
    """The termination signals received while a sweep ran (empty: none; truthy once SIGTERM arrived)."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[_Signals]:
    """While a sweep runs, SIGTERM (``kill``, a service manager, ``docker stop``) stops it as Ctrl-C does: what is
    done stays committed, the command says how much and exits 143; pool processes are stopped, not left behind."""
    received = _Signals()

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield received
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_code(terminated: _Signals) -> int:
    """The exit code of a stopped sweep: 128 + the signal, as a shell reports it (130 Ctrl-C, 143 SIGTERM)."""
    return 128 + (terminated[0] if terminated else signal.SIGINT)


def _farm_backtest(
    spec: SweepSpec,
    settings: Settings,
    store: ResultStore,
    detach: bool,
    top: int,
    curves: bool,
    terminated: _Signals | None = None,
) -> None:
    """Submit the sweep to the farm; wait with a live bar (unless detached), then print the same tables."""
    from backfarm.cli.farm import FarmProgressBar
    from backfarm.farm.client import FarmExecutor
    from backfarm.sweeps.run import run_sweep

    started = time.perf_counter()
    if detach:
        outcome = run_sweep(spec, settings, store, FarmExecutor(settings, detach=True), curves=curves)
        typer.echo(outcome.sweep_id)
        state.err_console.print(
            f"submitted sweep {outcome.sweep_id} ({count(outcome.total, 'job')}, {outcome.reused:,} already stored); "
            f"follow it with `backfarm status {outcome.sweep_id} --watch`"
        )
        return
    with FarmProgressBar() as bar:
        outcome = run_sweep(spec, settings, store, FarmExecutor(settings, on_update=bar.update), curves=curves)
    if outcome.stats.interrupted:
        state.err_console.print(
            f"stopped waiting: the farm keeps working on sweep {outcome.sweep_id}; "
            f"follow it with `backfarm status {outcome.sweep_id} --watch`"
        )
        raise typer.Exit(code=_stop_code(terminated or _Signals()))
    _report(outcome, store, top, time.perf_counter() - started, farm=True)
    _exit_if_failed(outcome, store)


class _Bar:
    """The local executor's progress on stderr: a transient bar that starts with the first job, with the rate."""

    def __init__(self) -> None:
        self.progress = _progress()
        self.task: TaskID | None = None
        self.started = 0.0
        self.finished = 0

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress.live.is_started:  # stopping a never-started bar still prints a newline
            self.progress.stop()

    def start(self, total: int) -> None:
        """Show the bar for ``total`` jobs."""
        self.progress.start()
        self.task = self.progress.add_task("backtests", total=total, rate="")
        self.started = time.perf_counter()

    def advance(self, jobs: int, failed: int) -> None:
        """``jobs`` more finished."""
        self.finished += jobs
        if self.task is not None:
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            self.progress.update(self.task, advance=jobs, rate=per_second(self.finished / elapsed))


def _progress() -> Progress:
    return state.progress_bar(
        "{task.description}", TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
        TimeRemainingColumn(),
    )  # fmt: skip


def _dry_run(spec: SweepSpec, settings: Settings) -> None:
    """What the sweep would be, from the expansion alone (the same validation a real run does first)."""
    from backfarm.sweeps.run import expand_spec

    exp = expand_spec(spec, settings)
    strategies = sorted({job.strategy for job in exp.jobs})
    sets = len({(job.strategy, tuple(sorted(job.params.items()))) for job in exp.jobs})
    span = f"{exp.windows[0][0]:%Y-%m-%d} → {exp.windows[-1][1]:%Y-%m-%d}"
    state.console.print(
        f"dry run: sweep {exp.sweep_id} · {count(len(exp.jobs), 'job')}: {count(sets, 'parameter set')} of "
        f"{count(len(strategies), 'strategy', 'strategies')} × {count(len(spec.symbols), 'symbol')} × "
        f"{count(len(exp.windows), 'window')} · {spec.granularity} bars {span} · source {spec.source}; nothing "
        "fetched, run or stored"
    )


JOBS_FAILED = 4
"""Exit code of a sweep that ran to its end but in which jobs failed (their reasons printed, the jobs marked dead)."""
REASONS_SHOWN = 5


def _exit_if_failed(outcome: SweepOutcome, store: ResultStore) -> None:
    """Say why the sweep's jobs failed (the commonest reasons, with counts) and exit :data:`JOBS_FAILED`."""
    failed = outcome.stats.failed
    if not failed:
        return
    reasons = Counter(
        reason.splitlines()[0][:200] if reason else "unknown" for reason in store.dead(outcome.sweep_id).values()
    )
    state.err_console.print(
        f"{count(failed, 'job')} failed (marked dead; `backfarm status {outcome.sweep_id}` lists them):"
    )
    for reason, n in reasons.most_common(REASONS_SHOWN):
        state.err_console.print(f"  {n:,} × {reason}")
    if len(reasons) > REASONS_SHOWN:
        state.err_console.print(f"  … and {count(len(reasons) - REASONS_SHOWN, 'other reason')}")
    raise typer.Exit(code=JOBS_FAILED)


def _report(outcome: SweepOutcome, store: ResultStore, top: int, wall: float, farm: bool = False) -> None:
    console = state.console
    filters = Filters(sweep=outcome.sweep_id)
    exp = outcome.expansion
    span = f"{exp.windows[0][0]:%Y-%m-%d} → {exp.windows[-1][1]:%Y-%m-%d}"
    windows = f", {count(len(exp.windows), 'window')}" if len(exp.windows) > 1 else ""
    console.print(
        Text.assemble(
            "sweep ",
            (outcome.sweep_id, "bold"),
            f" · {count(outcome.total, 'job')} ({outcome.stats.computed:,} computed, {outcome.reused:,} reused"
            f"{', ' + format(outcome.stats.failed, ',') + ' failed' if outcome.stats.failed else ''}) · "
            f"{exp.spec.granularity} bars {span}{windows}",
        )
    )
    console.print(f"source: {source_label(exp.spec.source)}")
    if top:
        records = store.top("sharpe", top, filters, pictures=False)
        console.print(top_table(records, "sharpe", f"top {len(records)} by sharpe"))
    rows = store.aggregate("strategy", filters)
    console.print(aggregate_table(rows, "strategy", "per strategy"))
    computed = outcome.stats.computed
    if not computed and not outcome.stats.failed:
        reused = "the result" if outcome.reused == 1 else f"all {count(outcome.reused, 'result')}"
        console.print(f"nothing to compute: {reused} reused; {wall:.2f} s in total")
    elif not computed:
        console.print(f"no backtest succeeded; {wall:.2f} s in total")
    else:
        rate = computed / outcome.stats.seconds if outcome.stats.seconds > 0 else 0.0
        used = outcome.stats.workers
        answering = f", {count(used, 'worker')} answering" if used else ""
        where = f"on the farm{answering}" if farm else f"on {count(used, 'process', 'processes')}"
        console.print(
            f"{count(computed, 'backtest')} in {outcome.stats.seconds:.2f} s ({per_second(rate)} {where}); "
            f"{wall:.2f} s in total"
        )
