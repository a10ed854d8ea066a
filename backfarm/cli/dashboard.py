"""``backfarm dashboard``, ``backfarm report`` and ``backfarm plot``: the results as pictures."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from backfarm.cli import state
from backfarm.config import redact_url
from backfarm.dashboard import DEFAULT_CHARTS, DEFAULT_PORT, DEFAULT_REFRESH_S, DEFAULT_ROWS
from backfarm.errors import ValidationError

# Commands import what they run inside their bodies, so `backfarm --help` stays fast (no engine, store or Celery).


def register(app: typer.Typer) -> None:
    """Add the commands to the root app."""
    app.command("dashboard")(dashboard)
    app.command("report")(report)
    app.command("plot")(plot)


def _store():
    from backfarm.results.factory import open_store

    return open_store(state.settings())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dashboard(
    port: Annotated[int, typer.Option(help="TCP port (0 = any free port).")] = DEFAULT_PORT,
    host: Annotated[
        str, typer.Option(help="Address to listen on; the default serves this machine only.")
    ] = "127.0.0.1",
    auth: Annotated[
        str | None,
        typer.Option(
            help="Require basic auth, user:password (env BACKFARM_DASHBOARD_AUTH).", envvar="BACKFARM_DASHBOARD_AUTH"
        ),
    ] = None,
    refresh: Annotated[float, typer.Option(help="Seconds between the page's updates.")] = DEFAULT_REFRESH_S,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Another host name the dashboard may be reached by (repeatable). Requests by IP address, by "
            "localhost or by --host's name are always answered; any other name is refused (DNS rebinding)."
        ),
    ] = None,
) -> None:
    """Serve a read-only web dashboard: leaderboard, sweeps, paper sessions, equity curves (updates itself)."""
    from backfarm.dashboard.paper import PaperSessions
    from backfarm.dashboard.server import Dashboard, allowed_hosts, parse_auth, serve
    from backfarm.strategies.registry import all_strategies

    credentials = parse_auth(auth)
    if not 0 <= port <= 65535:
        raise ValidationError(f"--port must be between 0 and 65535, got {port}")
    if not 0.5 <= refresh <= 3600:
        raise ValidationError(f"--refresh must be between 0.5 and 3600 seconds, got {refresh}")
    if credentials is None and not _is_loopback(host):
        state.err_console.print(f"warning: serving on {host} without --auth: anyone who can reach it sees the results")
    settings = state.settings()
    store = _store()
    label = redact_url(settings.redis_url) or str(settings.store_path)
    sessions = PaperSessions(settings)
    board = Dashboard(
        store,
        label,
        refresh,
        credentials,
        tuple(all_strategies()),
        settings,
        sessions,
        allowed_hosts(host, allow_host or ()),
    )
    try:
        serve(board, host, port, on_ready=lambda url: typer.echo(f"dashboard on {url} (read-only; Ctrl-C to stop)"))
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)
    finally:
        sessions.close()
        store.close()


def report(
    sweep: Annotated[str, typer.Argument(help="Sweep id, a unique prefix, or 'latest'.")],
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("report.html"),
    metric: Annotated[str, typer.Option(help="Metric the rows are ranked by first.")] = "sharpe",
    rows: Annotated[int, typer.Option(help="Most result rows to include (0 = all).")] = DEFAULT_ROWS,
    charts: Annotated[int, typer.Option(help="Equity curves to include (the best rows).")] = DEFAULT_CHARTS,
) -> None:
    """Write one self-contained HTML report of a sweep (tables and charts; opens offline, makes no requests)."""
    from backfarm.dashboard.report import write_report

    with _store() as store:
        if sweep == "latest":
            latest = store.sweeps()
            if not latest:
                raise ValidationError("no sweeps yet: run `backfarm backtest`")
            sweep = latest[0].sweep_id
        summary = write_report(store, sweep, out, metric, rows, charts, state.settings())
    state.err_console.print(
        f"wrote {out}: sweep {summary.sweep_id}, {summary.rows:,} of {summary.results:,} results, "
        f"{summary.charts} equity curves, {summary.bytes / 1024:,.0f} KiB"
    )


def plot(
    job_id: Annotated[str, typer.Argument(help="Job id, or a unique prefix of one (as the leaderboard shows).")],
    out: Annotated[Path, typer.Option(help="PNG file to write.")] = Path("equity.png"),
    width: Annotated[int, typer.Option(help="Width in pixels.")] = 1200,
    height: Annotated[int, typer.Option(help="Height in pixels.")] = 700,
) -> None:
    """Draw one result's equity curve, trade markers and drawdown to a PNG."""
    from backfarm.dashboard.data import find_result
    from backfarm.dashboard.plot import plot_png
    from backfarm.dashboard.recompute import with_curve

    if out.suffix.lower() != ".png":
        raise ValidationError(f"--out must end in .png, got {out.name!r}")
    with _store() as store:
        record = find_result(store, job_id)
    record, reason = with_curve(record, state.settings())
    if reason:
        raise ValidationError(f"result {record.job_id}: {reason}")
    png = plot_png(record, width, height)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    note = " (curve recomputed from cached candles)" if record.extra.get("recomputed") else ""
    state.err_console.print(f"wrote {out}: {record.strategy} {record.symbol} {record.job_id}{note}")
