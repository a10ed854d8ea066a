"""``backfarm leaderboard``, ``backfarm sweeps`` and ``backfarm results``: reading the result store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from backfarm.cli import state
from backfarm.cli.output import aggregate_table, source_label, sweeps_table, to_csv, top_table
from backfarm.core.results import FILTER_FIELDS, METRICS, Filters, ResultRecord
from backfarm.errors import ValidationError, did_you_mean
from backfarm.results.rows import flat_row

if TYPE_CHECKING:
    from backfarm.results.store import ResultReader

# Commands import what they run inside their bodies, so `backfarm --help` stays fast (no engine, store or Celery).

FORMATS = ("table", "json", "csv")
KINDS = ("backtest", "paper")
ALL = 10**12
"""More rows than any store holds: what ``--top 0`` (all) asks for."""


def register(app: typer.Typer) -> None:
    """Add the commands to the root app."""
    app.command("leaderboard")(leaderboard)
    app.command("sweeps")(sweeps)
    app.command("results")(results)


def _store() -> ResultReader:
    """The store, opened for reading: only what reading needs is loaded (DuckDB, or the Redis client)."""
    settings = state.settings()
    if settings.redis_url:
        from backfarm.results.redis_store import RedisStore

        return RedisStore(settings.redis_url)
    from backfarm.results.parts import embedded_root
    from backfarm.results.reader import EmbeddedReader

    return EmbeddedReader(embedded_root(settings))


def parse_where(items: list[str]) -> dict[str, str]:
    """``--where key=value`` pairs on the filter fields."""
    out: dict[str, str] = {}
    fields = [f for f in FILTER_FIELDS if f != "sweep"]
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not value.strip():
            raise ValidationError(f"--where must look like key=value, got {item!r}")
        if key not in fields:
            raise ValidationError(did_you_mean("--where field", key, fields))
        out[key] = value.strip()
    return out


def leaderboard(
    sweep: Annotated[str | None, typer.Option(help="Sweep id or a unique prefix (default: the latest sweep).")] = None,
    all_results: Annotated[bool, typer.Option("--all", help="Rank every stored result, not one sweep.")] = False,
    metric: Annotated[str, typer.Option(help="Metric to rank by.")] = "sharpe",
    top: Annotated[int, typer.Option(help="Number of rows (0 = all).")] = 20,
    by: Annotated[str | None, typer.Option(help="Aggregate by strategy or symbol instead of ranking jobs.")] = None,
    where: Annotated[list[str] | None, typer.Option(help="Filter: strategy=, symbol=, source=, kind=, ...")] = None,
    kind: Annotated[
        str | None, typer.Option(help="backtest or paper: that kind's results (of every sweep, unless --sweep).")
    ] = None,
    ascending: Annotated[bool | None, typer.Option("--asc/--desc", help="Override the metric's direction.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """The best results by a metric (default Sharpe), or aggregates per strategy or symbol."""
    if metric not in METRICS:
        raise ValidationError(did_you_mean("metric", metric, METRICS))
    if fmt not in FORMATS:
        raise ValidationError(did_you_mean("format", fmt, FORMATS))
    if by is not None and by not in ("strategy", "symbol"):
        raise ValidationError(did_you_mean("--by value", by, ("strategy", "symbol")))
    if top < 0:
        raise ValidationError(f"--top must be >= 0, got {top}")
    conditions = parse_where(where or [])
    if kind:
        conditions["kind"] = kind
    if conditions.get("kind", "backtest") not in KINDS:
        raise ValidationError(did_you_mean("kind", conditions["kind"], KINDS))
    with _store() as store:
        sweep_id = None
        # A kind without a sweep means that kind's results (paper results belong to no sweep), not the latest sweep's.
        if not all_results and (sweep is not None or "kind" not in conditions):
            sweep_id = _resolve_sweep(store, sweep)
        filters = Filters(sweep=sweep_id, **conditions)
        if by:
            rows = store.aggregate(by, filters)
            if fmt == "json":
                typer.echo(json.dumps([row.__dict__ for row in rows], indent=1))
            elif fmt == "csv":
                typer.echo(to_csv([row.__dict__ for row in rows]), nl=False)
            else:
                state.console.print(
                    aggregate_table(rows, by, f"per {by}" + (f" · sweep {sweep_id}" if sweep_id else ""))
                )
            return
        n = min(top, ALL) if top > 0 else ALL  # a --top beyond any store's size means all of them
        records = store.top(metric, n, filters, ascending=ascending, pictures=False)
        _print_records(records, metric, fmt, sweep_id, conditions.get("kind"))


def _resolve_sweep(store, sweep: str | None) -> str | None:
    if sweep:
        info = store.sweep(sweep)
        if info is None:
            raise ValidationError(f"unknown sweep '{sweep}' (see `backfarm sweeps`)")
        return str(info.sweep_id)
    latest = store.sweeps()
    return latest[0].sweep_id if latest else None


def _print_records(
    records: list[ResultRecord], metric: str, fmt: str, sweep_id: str | None, kind: str | None = None
) -> None:
    if fmt == "json":
        # Curves and trade lists (``extra``) are for pictures; `backfarm results` and the dashboard expose them.
        rows = [{"rank": i, **{k: v for k, v in r.to_dict().items() if k != "extra"}} for i, r in enumerate(records, 1)]
        typer.echo(json.dumps(rows, indent=1))
        return
    if fmt == "csv":
        typer.echo(to_csv([{"rank": i, **flat_row(r)} for i, r in enumerate(records, 1)]), nl=False)
        return
    if not records:
        hint = "start a session with `backfarm paper start`" if kind == "paper" else "run `backfarm backtest`"
        state.console.print(f"no {kind + ' ' if kind else ''}results yet: {hint}")
        return
    sources = sorted({r.source for r in records})
    title = f"top {len(records)} by {metric}" + (f" · sweep {sweep_id}" if sweep_id else "")
    state.console.print(top_table(records, metric, title))
    state.console.print("source: " + ", ".join(source_label(s) for s in sources))


def sweeps() -> None:
    """Every sweep, newest first, with its progress."""
    with _store() as store:
        items = store.sweeps()
        if not items:
            state.console.print("no sweeps yet: run `backfarm backtest`")
            return
        state.console.print(sweeps_table(items))


def results(
    sweep: Annotated[str, typer.Argument(help="Sweep id, a unique prefix, or 'latest'.")],
    out: Annotated[Path, typer.Option(help="Output file: .parquet or .csv.")],
) -> None:
    """Write one row per job of a sweep — every metric, parameters as columns — to Parquet or CSV, streaming (a page
    of results in memory at a time; the file appears complete or not at all)."""
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValidationError(f"--out must end in .parquet or .csv, got {out.name!r}")
    from backfarm.results.export import export_sweep

    with _store() as store:
        sweep_id = _resolve_sweep(store, None if sweep == "latest" else sweep)
        if sweep_id is None:
            raise ValidationError("no sweeps yet: run `backfarm backtest`")
        info = store.sweep(sweep_id)
        total = info.done if info else 0
        with state.err_console.status(f"exporting {total:,} results of sweep {sweep_id} ..."):
            written = export_sweep(store, sweep_id, out)
    state.err_console.print(f"wrote {written:,} results of sweep {sweep_id} to {out}")
