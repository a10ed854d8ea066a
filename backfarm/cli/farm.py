"""The farm's commands: ``worker``, ``flower``, ``status`` and ``sweep reconcile|cancel``.

``worker`` and ``flower`` run in the foreground with the same settings as every other command (the Redis URL, time
limits and visibility timeout come from ``BACKFARM_*``), so a machine needs nothing but ``BACKFARM_REDIS_URL`` to
join. Passwords never reach argv, logs or output: Flower's basic auth is handed over through its environment.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.progress import TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from backfarm._util.outage import Outage
from backfarm.cli import options, state
from backfarm.core.formatting import count
from backfarm.errors import ConfigError, ServiceUnavailable, TemporaryError, ValidationError, did_you_mean
from backfarm.sweeps.spec import split_list

# Commands import what they run inside their bodies, so `backfarm --help` stays fast (no engine, store or Celery).

if TYPE_CHECKING:
    from backfarm.config import Settings
    from backfarm.farm.client import FarmClient
    from backfarm.farm.watch import Progress as FarmProgress
    from backfarm.paper.store.base import SessionStore
    from backfarm.results.store import ResultStore

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")

sweep_app = typer.Typer(no_args_is_help=True, help="Farm sweeps: re-enqueue what is missing, or cancel.")


def register(app: typer.Typer) -> None:
    """Add the farm commands to the root app."""
    app.command("worker")(worker)
    app.command("flower")(flower)
    app.command("status")(status)
    app.add_typer(sweep_app, name="sweep")


def _farm_settings() -> Settings:
    """Settings with a Redis URL that answers (ServiceUnavailable, exit 3, or AuthError, exit 2, otherwise)."""
    from backfarm._util.connection import check_redis

    settings = state.settings()
    check_redis(settings.require_redis_url())
    return settings


@contextmanager
def _farm(settings: Settings) -> Iterator[FarmClient]:
    """A farm client on the Redis result store, both closed at the end."""
    from backfarm.farm.client import FarmClient
    from backfarm.results.redis_store import RedisStore

    with RedisStore(settings.require_redis_url()) as store, FarmClient(settings, store) as farm:
        yield farm


# --- worker ------------------------------------------------------------------------------------------------------


def worker(
    queues: Annotated[
        str, typer.Option(help="Comma-separated queues to consume: backtest, paper, data.")
    ] = "backtest,paper,data",
    concurrency: Annotated[int | None, typer.Option(help="Worker processes (default: all cores).")] = None,
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ERROR or CRITICAL.")] = "INFO",
    name: Annotated[str | None, typer.Option(help="Node name (default: backfarm-PID@HOST).")] = None,
    strategy_path: options.StrategyPath = None,
) -> None:
    """Start a Celery worker for the farm (prefork, late acks, one message per free process). It runs the built-in
    strategies, installed plugins and the files of --strategy-path; a batch of a strategy whose code differs here is
    handed back to a worker that has it."""
    from backfarm._util.connection import check_redis
    from backfarm._util.cpu import default_workers
    from backfarm.farm import lifecycle, watchdog
    from backfarm.farm.app import create_app
    from backfarm.farm.keys import BACKTEST_QUEUE, QUEUES

    chosen = split_list(queues)
    if not chosen:
        raise ValidationError("--queues needs at least one queue")
    for queue in chosen:
        if queue not in QUEUES:
            raise ValidationError(did_you_mean("queue", queue, QUEUES))
    if concurrency is not None and concurrency < 1:
        raise ValidationError(f"--concurrency must be at least 1, got {concurrency}")
    level = loglevel.upper()
    if level not in LOG_LEVELS:
        raise ValidationError(did_you_mean("log level", loglevel, LOG_LEVELS))
    settings = state.settings()
    app = create_app(settings)  # validates the URL and the time limits before anything starts
    try:
        check_redis(settings.require_redis_url())
    except ServiceUnavailable as exc:  # not up yet (compose starts us early): Celery keeps retrying the connection
        state.err_console.print(f"warning: {str(exc).rstrip('.')}; the worker keeps trying to connect")
    state.load_strategy_files(strategy_path)
    lifecycle.install(settings, chosen)
    if BACKTEST_QUEUE in chosen:
        watchdog.install(settings)
    _worker_logging(level)
    node = name or f"backfarm-{os.getpid()}@{socket.gethostname()}"
    argv = ["worker", f"--loglevel={level}", f"--queues={','.join(chosen)}", f"--hostname={node}"]
    argv += [f"--concurrency={concurrency or default_workers()}", "--pool=prefork", "--without-mingle"]
    argv += ["--without-gossip"]
    app.worker_main(argv)


def _worker_logging(level: str) -> None:
    """backfarm's own log lines go through Celery's handlers at the worker's level (not the CLI's warnings-only)."""
    logger = logging.getLogger("backfarm")
    for handler in list(logger.handlers):
        if getattr(handler, "_backfarm_cli", False):
            logger.removeHandler(handler)
    logger.setLevel(level)


# --- flower ------------------------------------------------------------------------------------------------------


def flower(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 5555,
    address: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 inside a container).")] = "127.0.0.1",
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="No login at all; only allowed on 127.0.0.1.")
    ] = False,
) -> None:
    """Start Flower, the farm's monitoring UI, behind basic auth from BACKFARM_FLOWER_AUTH (user:password)."""
    if not 0 < port < 65536:
        raise ValidationError(f"--port must be between 1 and 65535, got {port}")
    settings = state.settings()
    auth = settings.flower_auth
    if insecure_no_auth:
        if address not in LOCAL_ADDRESSES:
            raise ConfigError(f"--insecure-no-auth only listens on 127.0.0.1, not {address}; set BACKFARM_FLOWER_AUTH")
        auth = None
    elif not auth:
        raise ConfigError(
            "Flower needs a login: set BACKFARM_FLOWER_AUTH=user:password "
            "(or pass --insecure-no-auth to look at it on 127.0.0.1 only)"
        )
    elif any(":" not in pair or pair.startswith(":") or pair.endswith(":") for pair in auth.split(",")):
        raise ConfigError("BACKFARM_FLOWER_AUTH must look like user:password (comma-separated for several users)")
    from backfarm.farm.app import create_app

    app = create_app(settings)
    _farm_settings()
    # Hand the credentials over through Flower's environment, never argv (visible in `ps`); drop anything that
    # would open its API without a login.
    for var in ("FLOWER_BASIC_AUTH", "FLOWER_UNAUTHENTICATED_API", "FLOWER_AUTH", "FLOWER_AUTH_PROVIDER"):
        os.environ.pop(var, None)
    if auth:
        os.environ["FLOWER_BASIC_AUTH"] = auth
    argv = ["flower", f"--port={port}", f"--address={address}", "--conf=/dev/null", "--purge_offline_workers=300"]
    app.start(argv)


# --- status ------------------------------------------------------------------------------------------------------


def status(
    sweep: Annotated[str | None, typer.Argument(help="Sweep id or a unique prefix (default: the latest).")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until the sweep is complete (Ctrl-C stops).")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 2.0,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """A sweep's progress from the store (done / dead / pending, why jobs died), and the farm's queues and workers."""
    from backfarm.results.factory import open_store

    if fmt not in ("table", "json"):
        raise ValidationError(did_you_mean("format", fmt, ("table", "json")))
    if interval <= 0:
        raise ValidationError(f"--interval must be positive, got {interval:g}")
    settings = state.settings()
    if settings.redis_url:
        with _farm(_farm_settings()) as farm:
            _status(farm.store, farm, sweep, watch, interval, fmt, settings)
    else:
        with open_store(settings) as store:
            _status(store, None, sweep, watch, interval, fmt, settings)


def _status(
    store: ResultStore,
    farm: FarmClient | None,
    sweep: str | None,
    watch: bool,
    interval: float,
    fmt: str,
    settings: Settings,
) -> None:
    sweep_id = _resolve(store, sweep)
    if sweep_id is None:
        state.console.print("no sweeps yet: run `backfarm backtest`")
        return
    with _paper_store(settings) as sessions:
        if not watch:
            _print_status({**status_report(store, sweep_id, farm), "paper": paper_rows(sessions)}, fmt)
            return
        outage = Outage(settings.redis_outage_s)
        with Live(console=state.console, auto_refresh=False) as live:
            while True:
                try:
                    report = {**status_report(store, sweep_id, farm), "paper": paper_rows(sessions)}
                except TemporaryError:  # Redis restarting or out of reach: keep watching, up to the outage limit
                    if (down := outage.failed()) is None:
                        raise
                    live.update(Text(f"Redis unreachable, waiting ({down:.0f} s)"), refresh=True)
                    time.sleep(min(interval, 1.0))
                    continue
                outage.answered()
                live.update(_status_view(report), refresh=True)
                if report["complete"] or report["cancelled"]:
                    break
                time.sleep(interval)
        if not state.console.is_terminal:
            state.console.line()  # a terminal gets its newline from Live; a pipe or file does not


@contextmanager
def _paper_store(settings: Any) -> Iterator[SessionStore | None]:
    """The paper session store for ``status``, closed at the end; None when it cannot be opened."""
    from backfarm.paper.store import open_session_store

    try:
        sessions = open_session_store(settings)
    except Exception:  # noqa: BLE001 - the sweep view must not fail because the paper store is unreadable
        sessions = None
    if sessions is None:
        yield None
        return
    with sessions:
        yield sessions


def paper_rows(sessions: SessionStore | None, limit: int = 5) -> list[dict[str, Any]]:
    """The newest paper sessions (status, progress, worker) for ``status``; empty when there are none.

    Status and bars follow ``backfarm paper status``: "orphaned" for a running session nobody holds, and the bars
    every account has done.
    """
    if sessions is None:
        return []
    try:
        infos = sessions.sessions()[:limit]
    except Exception:  # noqa: BLE001 - the sweep view must not fail because the paper store is unreadable
        return []
    rows = []
    for info in infos:
        done = (info.cursor or {}).get("bars_done") or {}
        rows.append(
            {
                "session": info.spec.session_id,
                "status": "orphaned" if info.orphaned else info.status,
                "feed": info.spec.feed,
                "accounts": len(info.spec.strategies) * len(info.spec.symbols),
                "bar": min((int(v) for v in done.values()), default=0),
                "worker": info.worker,
                "error": info.error,
            }
        )
    return rows


def _resolve(store: ResultStore, sweep: str | None) -> str | None:
    if sweep:
        info = store.sweep(sweep)
        if info is None:
            raise ValidationError(f"unknown sweep '{sweep}' (see `backfarm sweeps`)")
        return info.sweep_id
    latest = store.sweeps()
    return latest[0].sweep_id if latest else None


def status_report(store: ResultStore, sweep_id: str, farm: FarmClient | None) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (the JSON output)."""
    info = store.sweep(sweep_id)
    assert info is not None
    dead = store.dead(sweep_id)
    reasons = Counter(dead.values())
    report: dict[str, Any] = {
        "sweep": info.sweep_id,
        "created": datetime.fromtimestamp(info.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "source": info.source,
        "total": info.total,
        "done": info.done,
        "dead": info.dead,
        "pending": max(0, info.total - info.done - info.dead),
        "complete": info.complete,
        "cancelled": False,
        "dead_reasons": [
            {"reason": reason, "jobs": count, "example": next(j for j, r in dead.items() if r == reason)}
            for reason, count in reasons.most_common()
        ],
    }
    if farm is not None:
        from backfarm.farm.client import live_workers
        from backfarm.farm.watchdog import last_reconcile

        attempts = farm.ledger.attempts(sweep_id)
        report["cancelled"] = farm.ledger.is_cancelled(sweep_id)
        report["attempts"] = {
            "jobs_attempted": len(attempts),
            "jobs_retried": sum(1 for n in attempts.values() if n > 1),
            "max": max(attempts.values(), default=0),
        }
        report["queues"] = farm.ledger.queue_lengths()
        report["workers"] = live_workers(farm.app)
        report["strategy_code"] = _strategy_code(farm, info.spec.get("strategies") or [])
        report["reconciled"] = last_reconcile(farm.store.conn, farm.ledger.keys, info.sweep_id)
    return report


def _strategy_code(farm: FarmClient, strategies: list[str]) -> dict[str, dict[str, list[str]]]:
    """For each strategy of the sweep: which live workers have which identity of it ("missing": none)."""
    from backfarm.farm.presence import Presence

    live = Presence(farm.store.conn).live()
    return {
        name: {
            identity: sorted(w for w, have in live.items() if have.get(name, "missing") == identity)
            for identity in sorted({have.get(name, "missing") for have in live.values()})
        }
        for name in strategies
    }


def _print_status(report: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        typer.echo(json.dumps(report, indent=1))
    else:
        state.console.print(_status_view(report))


def _status_view(report: dict[str, Any]) -> Group:
    total = report["total"] or 1
    head = "cancelled" if report["cancelled"] else ("complete" if report["complete"] else "running")
    table = Table(title=f"sweep {report['sweep']} · {head}", title_justify="left", header_style="bold")
    for col in ("jobs", "done", "dead", "pending", "progress"):
        table.add_column(col, justify="right")
    finished = report["done"] + report["dead"]
    table.add_row(
        f"{report['total']:,}",
        f"{report['done']:,}",
        f"{report['dead']:,}",
        f"{report['pending']:,}",
        f"{100 * finished / total:.1f}%",
    )
    parts: list[Any] = [table, f"created {report['created']} UTC · source {report['source']}"]
    if report["dead_reasons"]:
        why = Table(title="why jobs are dead", title_justify="left", header_style="bold")
        for col in ("jobs", "reason", "example job"):
            why.add_column(col, justify="right" if col == "jobs" else "left")
        for row in report["dead_reasons"][:10]:
            why.add_row(f"{row['jobs']:,}", row["reason"], row["example"])
        parts.append(why)
    if "queues" in report:
        attempts = report["attempts"]
        queues = " · ".join(f"{name} {n:,}" for name, n in report["queues"].items())
        workers = report["workers"]
        parts.append(f"queues: {queues}")
        parts.append(f"attempts: {attempts['jobs_retried']:,} jobs ran more than once (max {attempts['max']})")
        parts.append(f"live workers ({len(workers)}): {', '.join(workers) if workers else 'none answered'}")
        for name, copies in report["strategy_code"].items():
            if len(copies) > 1 or "missing" in copies:  # only what can keep jobs from running
                shown = "; ".join(f"{identity} on {', '.join(names)}" for identity, names in copies.items())
                parts.append(f"strategy {name} on the workers: {shown}")
    if report.get("reconciled"):
        note = report["reconciled"]
        at = datetime.fromtimestamp(note["at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        parts.append(
            f"reconciled by the farm: at {at} UTC worker {note['worker']} re-enqueued {count(note['jobs'], 'job')} "
            f"after {note['stalled_s']:,} s without progress and nothing queued or in flight"
        )
    if report.get("paper"):
        paper = Table(title="paper sessions", title_justify="left", header_style="bold")
        for col in ("session", "status", "feed", "accounts", "bar", "worker"):
            paper.add_column(col, justify="right" if col in ("accounts", "bar") else "left")
        for row in report["paper"]:
            status = row["status"] + (f" ({row['error'][:60]})" if row["error"] else "")
            paper.add_row(row["session"], status, row["feed"], str(row["accounts"]), str(row["bar"]), row["worker"])
        parts.append(paper)
    return Group(*parts)


# --- sweep reconcile / cancel -------------------------------------------------------------------------------------


@sweep_app.command("reconcile")
def reconcile(sweep: Annotated[str, typer.Argument(help="Sweep id or a unique prefix.")]) -> None:
    """Re-enqueue every job of the sweep that is expected but neither done nor dead (safe to run any time)."""
    with _farm(_farm_settings()) as farm:
        info = farm.progress(sweep)
        count = farm.reconcile(info.sweep_id)
    if count:
        state.console.print(f"re-enqueued {count:,} jobs of sweep {info.sweep_id}")
    else:
        state.console.print(f"nothing to re-enqueue: all {info.total:,} jobs of sweep {info.sweep_id} are done or dead")


@sweep_app.command("cancel")
def cancel(sweep: Annotated[str, typer.Argument(help="Sweep id or a unique prefix.")]) -> None:
    """Cancel a sweep: its queued batches are skipped and its unfinished jobs are marked dead."""
    with _farm(_farm_settings()) as farm:
        info = farm.progress(sweep)
        count = farm.cancel(info.sweep_id)
    if count is None:
        state.console.print(
            f"sweep {info.sweep_id} is already complete ({info.done:,} done, {info.dead:,} dead): nothing to cancel"
        )
        return
    state.console.print(f"cancelled sweep {info.sweep_id}: {count:,} unfinished jobs marked dead")


# --- live progress for `backtest` on the farm --------------------------------------------------------------------


class FarmProgressBar:
    """A transient progress bar on stderr fed with :class:`backfarm.farm.watch.Progress` updates."""

    def __init__(self) -> None:
        self.progress = state.progress_bar("farm", TextColumn("{task.fields[info]}"), TimeElapsedColumn())
        self.task: Any = None

    def __enter__(self) -> FarmProgressBar:
        return self  # the display starts with the first update, so an early error prints without a blank line

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.progress.stop()

    def update(self, p: FarmProgress) -> None:
        """Show done + dead of total, dead, rate, ETA and live workers."""
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("farm", total=p.total, info="")
        eta = f"eta {_duration(p.eta_s)}" if p.eta_s is not None else "eta —"
        workers = "workers ?" if p.workers is None else f"workers {len(p.workers)}"
        dead = f"dead {p.dead:,} · " if p.dead else ""
        info = f"{dead}{p.rate:,.0f}/s · {eta} · {workers}"
        if p.reconciled:
            info += f" · re-enqueued {p.reconciled:,}"
        if p.unreachable_s is not None:
            info = f"Redis unreachable, waiting ({p.unreachable_s:.0f} s)"
        self.progress.update(self.task, total=p.total, completed=p.done + p.dead, info=info)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )
