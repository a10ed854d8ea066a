"""``backfarm data``: import files into the candle cache, fetch from a source, list what is cached."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from backfarm.cli import options, state
from backfarm.core.candles import GRANULARITIES
from backfarm.core.formatting import count, per_second
from backfarm.errors import ValidationError, did_you_mean
from backfarm.sweeps.spec import split_list

# Commands import what they run inside their bodies, so `backfarm --help` stays fast (no engine, store or Celery).

app = typer.Typer(no_args_is_help=True)


def _check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValidationError(did_you_mean("granularity", granularity, GRANULARITIES))


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="CSV or Parquet file with time, open, high, low, close, volume.")],
    symbol: Annotated[str, typer.Option(help="Product name to file it under, e.g. BTC-USD.")],
    granularity: Annotated[str, typer.Option(help="Bar size of the file: 1m 5m 15m 30m 1h 2h 6h 1d.")],
) -> None:
    """Import candles from a file; they become the `file` source (`backtest --source file`)."""
    from backfarm.candles.fileimport import import_file

    _check_granularity(granularity)
    if not path.is_file():
        raise ValidationError(f"no such file: {path}")
    report = import_file(state.settings(), path, symbol, granularity)
    state.console.print(
        f"imported {report.rows:,} {granularity} bars of {symbol} ({report.first:%Y-%m-%d %H:%M} → "
        f"{report.last:%Y-%m-%d %H:%M}, {count(len(report.months), 'month')}, {count(report.gaps, 'missing bar')}) "
        "as source 'file'"
    )


@app.command("ls")
def ls(
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Only this product.")] = None,
) -> None:
    """What is cached: source, symbol, granularity, months, first/last bar, gaps."""
    from backfarm.candles.cache import CandleCache

    entries = CandleCache(state.settings().candles_dir).entries()
    entries = [e for e in entries if (not source or e.source == source) and (not symbol or e.symbol == symbol)]
    if not entries:
        state.console.print(f"the cache at {state.settings().candles_dir} is empty")
        return
    table = Table(title=f"candle cache · {state.settings().candles_dir}", title_justify="left", header_style="bold")
    for col in ("source", "symbol", "gran", "months", "first bar (UTC)", "last bar (UTC)", "bars", "gaps"):
        table.add_column(col, justify="right" if col in {"bars", "gaps"} else "left")
    for e in entries:
        if not e.months:
            months = "none readable"
        elif len(e.months) == 1:
            months = e.months[0]
        else:
            months = f"{e.months[0]} … {e.months[-1]} ({len(e.months)})"
        table.add_row(
            e.source,
            e.symbol,
            e.granularity,
            months,
            f"{e.first_ts:%Y-%m-%d %H:%M}" if e.first_ts else "—",
            f"{e.last_ts:%Y-%m-%d %H:%M}" if e.last_ts else "—",
            f"{e.rows:,}",
            f"{e.gaps:,}",
        )
    state.console.print(table)


@app.command("fetch")
def fetch(
    symbols: Annotated[str, typer.Option(help="Comma-separated products.")],
    granularity: options.Granularity = None,
    days: options.Days = None,
    start: options.Start = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive (default: now).")] = None,
    source: options.Source = None,
) -> None:
    """Download candles into the cache: only missing or stale monthly partitions; repeating it fetches nothing."""
    from backfarm._util.time import parse_iso
    from backfarm.candles.load import ensure_cached
    from backfarm.candles.sources import get_source

    granularity = granularity or "1m"
    _check_granularity(granularity)
    settings = state.settings()
    src = get_source(source or "coinbase", settings)
    names = split_list(symbols)
    if not names:
        raise ValidationError("--symbols is empty")
    for name in names:
        src.validate_symbol(name)
    now = datetime.now(UTC)
    if days is not None and days <= 0:
        raise ValidationError(f"--days must be a positive number of days, got {days}")
    stop = parse_iso(end) if end else now
    begin = parse_iso(start) if start else stop - timedelta(days=days or 30)
    if begin >= stop:
        raise ValidationError("--start must be before --end")
    progress = state.progress_bar(
        "{task.description}",
        TextColumn("months · {task.fields[requests]} requests · {task.fields[bars]} candles · {task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    totals = []
    with progress:
        for name in names:
            task = progress.add_task(f"{name} {granularity}", total=None, bars="0", requests=0, rate="")
            counts = {"requests": 0, "candles": 0}
            started = time.perf_counter()

            def on_page(
                candles: int, task: TaskID = task, counts: dict[str, int] = counts, t0: float = started
            ) -> None:
                counts["requests"] += 1
                counts["candles"] += candles
                rate = counts["candles"] / max(time.perf_counter() - t0, 1e-9)
                progress.update(task, requests=counts["requests"], bars=f"{counts['candles']:,}", rate=per_second(rate))

            def on_progress(done: int, total: int, bars: int, task: TaskID = task) -> None:
                progress.update(task, completed=done, total=total)

            if hasattr(src, "on_page"):
                src.on_page = on_page
            report = ensure_cached(settings, src, name, granularity, begin, stop, on_progress)
            totals.append((name, report))
    for name, report in totals:
        state.console.print(
            f"{name} {granularity}: {report.fetched} partitions fetched, {report.skipped} already cached, "
            f"{report.bars:,} candles"
        )
