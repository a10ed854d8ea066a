"""``backfarm store info|compact|migrate|complete``: look after the result store (the embedded store's Parquet parts
and their index; migrating and completing work on the farm's Redis too)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from backfarm.cli import state
from backfarm.core.formatting import count

# Commands import what they run inside their bodies, so `backfarm --help` stays fast (no engine, store or Celery).

app = typer.Typer(no_args_is_help=True)


@app.command("info")
def info() -> None:
    """How many results the embedded store holds, in how many part files, and how many bytes each result takes."""
    from backfarm.results.embedded import EmbeddedStore

    settings = state.settings()
    with EmbeddedStore(settings.store_path) as store:
        parts, rows, size = store.parts.totals()
        results, sweeps = store.count()
    per = f"{size / rows:,.0f} bytes per result" if rows else "no results yet"
    state.console.print(
        f"{settings.store_path}: {count(results, 'result')} in {count(parts, 'part file')} "
        f"({size / 2**20:,.1f} MiB, {per}), {count(sweeps, 'sweep')}"
    )


@app.command("compact")
def compact() -> None:
    """Merge the store's small part files into larger ones, so queries read fewer files (a put does the smallest
    merges itself; this does them all). Safe while others read or write."""
    from backfarm.results import compaction
    from backfarm.results.embedded import EmbeddedStore

    with EmbeddedStore(state.settings().store_path) as store:
        before = store.parts.totals()[0]
        report = compaction.compact(store.parts)
        after = store.parts.totals()[0]
    state.console.print(
        f"merged {count(report.parts_merged, 'part')} ({count(report.rows, 'result')}) in "
        f"{count(report.merges, 'merge')}: {count(before, 'part file')} → {after:,}; "
        f"{count(report.files_deleted, 'replaced file')} deleted"
    )


@app.command("migrate")
def migrate() -> None:
    """Convert a store of backfarm before 0.2 into the current layout, with every result, sweep, dead job and
    conflict: the single file results.sqlite (kept as *.migrated), or, with a Redis URL, the farm's results (stop
    the workers first). Safe to interrupt and run again."""
    from backfarm.results import compaction
    from backfarm.results.embedded import EmbeddedStore
    from backfarm.results.legacy import migrate as run

    settings = state.settings()
    if settings.redis_url:
        _migrate_redis(settings.redis_url)
        return
    old = settings.legacy_store_path
    if not old.exists():
        state.console.print(f"nothing to migrate: {old} does not exist")
        return
    progress = _progress("migrating")
    with EmbeddedStore(settings.store_path) as store, progress:
        task = progress.add_task("results", total=None)
        report = run(old, store, lambda done, total: progress.update(task, completed=done, total=total))
        compaction.compact(store.parts)
    state.console.print(
        f"migrated {count(report.results, 'result')}, {count(report.sweeps, 'sweep')}, "
        f"{count(report.dead, 'dead job')} and {count(report.conflicts, 'conflict')} into {settings.store_path}; "
        f"the old file is kept as {report.kept_as.name}"
    )


@app.command("complete")
def complete(
    sweep: Annotated[str | None, typer.Option("--sweep", help="Only the results of this sweep (id or prefix).")] = None,
) -> None:
    """Give results stored by backfarm before 0.3 the moments of their bar returns and their daily returns, so later
    analyses never recompute a backtest: each is recomputed once from its own fields and the cached candles
    (fetched if missing), checked against its stored hash and filled in; nothing else changes. Works on the
    embedded store, or on the farm's Redis with a Redis URL. Safe to interrupt and run again."""
    from backfarm.core.results import Filters
    from backfarm.errors import ValidationError
    from backfarm.execution.complete import complete as run
    from backfarm.results.factory import open_store

    settings = state.settings()
    with open_store(settings) as store:
        filters = None
        if sweep is not None:
            info = store.sweep(sweep)
            if info is None:
                raise ValidationError(f"no sweep '{sweep}' (see `backfarm sweeps`)")
            filters = Filters(sweep=info.sweep_id)
        progress = _progress("completing")
        with progress:
            task = progress.add_task("results", total=None)
            report = run(store, settings, filters, lambda n: progress.advance(task, n))
    state.console.print(
        f"completed {report.completed:,} of {count(report.found, 'result')} stored without their moments and daily "
        "returns"
    )
    for n, what in (
        (report.other_version, "made by another engine or strategy version: cannot be recomputed here"),
        (report.disagreed, "recomputed to other metrics: recorded as conflicts, stored results kept"),
        (report.failed, "could not be recomputed"),
    ):
        if n:
            state.console.print(f"{count(n, 'result')} {what}")
    for line in report.problems:
        state.console.print(f"  {line}")


def _migrate_redis(url: str) -> None:
    from backfarm.results.redis_store import RedisStore

    with RedisStore(url, check_layout=False) as store:
        if not store.legacy_results():
            state.console.print(f"nothing to migrate: {store.conn.safe_url} holds no results of backfarm 0.1")
            return
        progress = _progress("migrating")
        with progress:
            task = progress.add_task("results", total=None)
            moved = store.migrate_legacy(lambda done, total: progress.update(task, completed=done, total=total))
        state.console.print(
            f"migrated {moved:,} results on {store.conn.safe_url} into chunks; sweeps, dead jobs and conflicts keep "
            "their keys"
        )


def _progress(doing: str) -> Progress:
    return state.progress_bar(doing, TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
