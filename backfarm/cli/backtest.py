"""``backfarm backtest``: validate a sweep, run what is missing, print the leaderboard and the per-strategy table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from backfarm.cli import state
from backfarm.cli.output import aggregate_table, source_label, top_table
from backfarm.errors import ValidationError

TOP_DEFAULT = 10


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""
    app.command("backtest")(backtest)


def backtest(
    strategies: Annotated[str | None, typer.Option(help="Comma-separated strategy names.")] = None,
    symbols: Annotated[str | None, typer.Option(help="Comma-separated products, e.g. BTC-USD,ETH-USD.")] = None,
    params: Annotated[
        list[str] | None,
        typer.Option(help="Parameter sets: 'ma_crossover:fast=10,slow=30' ('|' lists alternatives). Repeatable."),
    ] = None,
    grid: Annotated[bool, typer.Option("--grid", help="Use every strategy's default parameter grid.")] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="7 days, momentum/mean_reversion/breakout on BTC-USD and ETH-USD.")
    ] = False,
    days: Annotated[int | None, typer.Option(help="Period: the last N whole days (UTC). (default 30)")] = None,
    start: Annotated[str | None, typer.Option(help="Period start (ISO date/time, UTC).")] = None,
    end: Annotated[str | None, typer.Option(help="Period end, exclusive (default: today 00:00 UTC).")] = None,
    granularity: Annotated[str | None, typer.Option(help="Bar size: 1m 5m 15m 30m 1h 2h 6h 1d. (default 1m)")] = None,
    window: Annotated[str | None, typer.Option(help="Walk-forward window length, e.g. 7d.")] = None,
    step: Annotated[str | None, typer.Option(help="Walk-forward step (default: the window length).")] = None,
    fee_bps: Annotated[float | None, typer.Option(help="Fee per side in basis points. (default 60)")] = None,
    spread_bps: Annotated[float | None, typer.Option(help="Full bid/ask spread in basis points. (default 2)")] = None,
    slippage_bps: Annotated[float | None, typer.Option(help="Slippage per side in basis points. (default 0)")] = None,
    stop_loss_bps: Annotated[float | None, typer.Option(help="Stop-loss below the entry price, in bps.")] = None,
    take_profit_bps: Annotated[float | None, typer.Option(help="Take-profit above the entry price, in bps.")] = None,
    capital: Annotated[float | None, typer.Option(help="Initial capital in quote currency. (default 10000)")] = None,
    source: Annotated[str | None, typer.Option(help="Candles: coinbase | synthetic | file. (default coinbase)")] = None,
    workers: Annotated[int | None, typer.Option(help="Local processes (default: all cores).")] = None,
    spec: Annotated[Path | None, typer.Option(help="A sweep spec file (TOML or JSON); flags override it.")] = None,
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
) -> None:
    """Run a sweep: strategies × parameters × symbols × windows. With no options: the 5 built-ins with default
    parameters on BTC/ETH/SOL/LINK/POL-USD over the last 30 days of 1-minute candles (25 backtests)."""
    from backfarm.tasks.sweep import SweepRequest, run_sweep

    if workers is not None and workers < 1:
        raise ValidationError(f"--workers must be at least 1, got {workers}")
    if top < 0:
        raise ValidationError(f"--top must be >= 0, got {top}")
    request = SweepRequest(
        strategies=strategies,
        symbols=symbols,
        params=params or [],
        grid=grid,
        quick=quick,
        days=days,
        start=start,
        end=end,
        granularity=granularity,
        window=window,
        step=step,
        fee_bps=fee_bps,
        spread_bps=spread_bps,
        slippage_bps=slippage_bps,
        stop_loss_bps=stop_loss_bps,
        take_profit_bps=take_profit_bps,
        capital=capital,
        source=source,
        spec_file=spec,
        curves=curves,
    )
    settings = state.settings()
    if settings.redis_url:
        if workers is not None:
            raise ValidationError(
                "--workers sizes the local executor; on the farm, size `backfarm worker --concurrency`"
            )
        _farm_backtest(request, settings, detach, top)
        return
    if detach:
        raise ValidationError("--detach needs the farm: set BACKFARM_REDIS_URL or pass --redis URL")
    started = time.perf_counter()
    progress = _progress()  # started by run_sweep only when there is work, so errors print without a blank line
    try:
        outcome = run_sweep(request, settings, workers=workers, progress=progress)
    finally:
        if progress.live.is_started:  # stopping a never-started bar still prints a newline
            progress.stop()
    wall = time.perf_counter() - started
    try:
        _report(outcome, top, wall)
        if outcome.stats.interrupted:
            state.err_console.print(
                f"interrupted: {outcome.done} of {outcome.total} jobs are stored; run the same command again to finish"
            )
            raise typer.Exit(code=130)
    finally:
        outcome.store.close()


def _farm_backtest(request, settings, detach: bool, top: int) -> None:  # type: ignore[no-untyped-def]
    """Submit the sweep to the farm; wait with a live bar (unless detached), then print the same tables."""
    from backfarm.cli.farm import FarmProgressBar
    from backfarm.tasks.sweep import submit_sweep

    started = time.perf_counter()
    if detach:
        outcome = submit_sweep(request, settings, detach=True)
        outcome.store.close()
        typer.echo(outcome.sweep_id)
        state.err_console.print(
            f"submitted sweep {outcome.sweep_id} ({outcome.total:,} jobs, {outcome.reused:,} already stored); "
            f"follow it with `backfarm status {outcome.sweep_id} --watch`"
        )
        return
    with FarmProgressBar() as bar:
        outcome = submit_sweep(request, settings, on_update=bar.update)
    try:
        if outcome.stats.interrupted:
            state.err_console.print(
                f"stopped waiting: the farm keeps working on sweep {outcome.sweep_id}; "
                f"follow it with `backfarm status {outcome.sweep_id} --watch`"
            )
            raise typer.Exit(code=130)
        _report(outcome, top, time.perf_counter() - started, farm=True)
    finally:
        outcome.store.close()


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=state.err_console,
        transient=True,
    )


def _report(outcome, top: int, wall: float, farm: bool = False) -> None:  # type: ignore[no-untyped-def]
    from backfarm.leaderboard.model import Filters

    console = state.console
    store = outcome.store
    filters = Filters(sweep=outcome.sweep_id)
    exp = outcome.expansion
    span = f"{exp.windows[0][0]:%Y-%m-%d} → {exp.windows[-1][1]:%Y-%m-%d}"
    windows = f", {len(exp.windows)} windows" if len(exp.windows) > 1 else ""
    console.print(
        f"sweep [bold]{outcome.sweep_id}[/] · {outcome.total:,} jobs ({outcome.stats.computed:,} computed, "
        f"{outcome.reused:,} reused{', ' + str(outcome.dead) + ' failed' if outcome.dead else ''}) · "
        f"{exp.spec.granularity} bars {span}{windows}"
    )
    console.print(f"source: {source_label(exp.spec.source)}")
    if top:
        records = store.top("sharpe", top, filters)
        console.print(top_table(records, "sharpe", f"top {len(records)} by sharpe"))
    rows = store.aggregate("strategy", filters)
    console.print(aggregate_table(rows, "strategy", "per strategy"))
    computed = outcome.stats.computed
    if not computed:
        console.print(f"nothing to compute: all {outcome.reused:,} results reused; {wall:.2f} s in total")
    else:
        rate = computed / outcome.stats.seconds if outcome.stats.seconds > 0 else 0.0
        answering = (
            f", {outcome.workers} worker{'s' if outcome.workers != 1 else ''} answering" if outcome.workers else ""
        )
        where = (
            f"on the farm{answering}" if farm else f"on {outcome.workers} process{'es' if outcome.workers > 1 else ''}"
        )
        console.print(
            f"{computed:,} backtests in {outcome.stats.seconds:.2f} s ({rate:,.0f}/s {where}); {wall:.2f} s in total"
        )
