"""``backfarm paper start|status|stop|report``: paper sessions on live Coinbase quotes or replayed candles.

With Redis configured a session is a task on the farm's ``paper`` queue (``backfarm worker --queues paper``);
without, it runs on this machine — in the foreground with ``--wait``, else in a detached process. Either way its
state lives in a session store (Redis, or ``paper.sqlite`` in the data directory), which is what ``status``,
``stop`` and ``report`` read. No order is ever sent to an exchange.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from backfarm._util.outage import Outage
from backfarm.cli import options, state
from backfarm.cli.output import fmt_metric, fmt_params, source_label
from backfarm.core.formatting import count
from backfarm.errors import TemporaryError, ValidationError, did_you_mean

# Commands import what they run inside their bodies, so `backfarm --help` stays fast (no engine, store or Celery).

app = typer.Typer(no_args_is_help=True, help="Paper trading: strategies on live quotes or replayed candles.")

FORMATS = ("table", "json")
REFRESH_S = 0.5
_SPARK = "▁▂▃▄▅▆▇█"


def _open_store():
    from backfarm.paper.store import open_session_store

    return open_session_store(state.settings())


# --- start -------------------------------------------------------------------------------------------------------


DEFAULT_STRATEGIES = ("momentum", "mean_reversion", "breakout")
"""A paper session's strategies when neither --strategies nor --params names any."""


@app.command("start")
def start(
    ctx: typer.Context,
    duration: Annotated[str, typer.Option(help="Market time to run, with its unit: 300s, 30m, 4h, 7d.")],
    strategies: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated strategy names. (default momentum,mean_reversion,breakout; with --params, the "
            "strategies it names)"
        ),
    ] = None,
    symbols: options.Symbols = "BTC-USD,ETH-USD,SOL-USD",
    feed: Annotated[str, typer.Option(help="coinbase (live quotes) or replay (cached candles).")] = "coinbase",
    speed: Annotated[str | None, typer.Option(help="Replay speed: N × real time, or max. (default max)")] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="Replay start (ISO, UTC). (default: the window ending today 00:00)")
    ] = None,
    granularity: options.Granularity = None,
    params: options.ParamSets = None,
    fee_bps: options.FeeBps = None,
    spread_bps: options.SpreadBps = None,
    slippage_bps: options.SlippageBps = None,
    stop_loss_bps: options.StopLossBps = None,
    take_profit_bps: options.TakeProfitBps = None,
    capital: options.Capital = None,
    source: Annotated[
        str | None, typer.Option(help="Candles for replay and warm-up: coinbase | synthetic | file. (default coinbase)")
    ] = None,
    warmup: Annotated[
        str | None, typer.Option(help="Bars of history before the first bar: N or auto. (default: 0 replay, auto live)")
    ] = None,
    stale_after: Annotated[float, typer.Option(help="Live: no trading on quotes older than this (s).")] = 30.0,
    wait: Annotated[bool, typer.Option("--wait", help="Show a live table until the session ends.")] = False,
    strategy_path: options.StrategyPath = None,
    allow_lookahead: options.AllowLookahead = False,
) -> None:
    """Start a paper session: N strategies × M symbols, each an account with its own capital. Prints its id."""
    from backfarm.core.costs import costs_from
    from backfarm.paper.spec import DEFAULT_CAPITAL, build_spec, validate_symbols
    from backfarm.sweeps.spec import params_strategies, parse_params, split_list

    state.load_strategy_files(strategy_path)
    given = parse_params(params or [])
    for name, sets in given.items():
        if len(sets) != 1:
            raise ValidationError(
                f"--params: one parameter set per strategy in a paper session ({name} has {len(sets)})"
            )
    costs = costs_from(ctx.params)  # the cost options, by their names (declared once, in cli.options)
    spec = build_spec(
        split_list(strategies) or params_strategies(given) or DEFAULT_STRATEGIES,  # --params names its strategies
        split_list(symbols),
        duration,
        feed=feed,
        granularity=granularity or "1m",
        speed=speed,
        start=from_,
        params={name: sets[0] for name, sets in given.items()},
        costs=costs,
        capital=DEFAULT_CAPITAL if capital is None else capital,
        source=source or "coinbase",
        warmup="default" if warmup is None else warmup,
        stale_after_s=stale_after,
    )
    settings = state.settings()
    validate_symbols(spec, settings)
    from backfarm.sweeps.lookahead import gate

    verdicts = gate(
        settings, [name for name, _ in spec.strategies], allow=allow_lookahead, announce=state.err_console.print
    )
    failing = tuple(name for name, verdict in verdicts.items() if not verdict.ok)
    spec = dataclasses.replace(spec, lookahead=failing)  # every runner of the session labels them
    with _open_store() as store:
        store.create(spec)
        if settings.redis_url:
            _enqueue(spec, settings)
            typer.echo(spec.session_id)
            if wait:
                _watch(store, spec.session_id, on_interrupt=_leave_running)
        elif wait:
            typer.echo(spec.session_id)
            _run_here(store, spec.session_id, settings)
        else:
            _spawn(spec.session_id, settings)
            typer.echo(spec.session_id)
    if not wait:
        state.err_console.print(
            f"paper session {spec.session_id} started ({_describe(spec)}); "
            f"follow it with `backfarm paper status {spec.session_id} --watch`"
        )


def _describe(spec: Any) -> str:
    what = (
        f"{count(len(spec.strategies), 'strategy', 'strategies')} × {count(len(spec.symbols), 'symbol')}, "
        f"{spec.granularity} bars"
    )
    if spec.replay:
        speed = "max speed" if spec.speed is None else f"{spec.speed:g}× real time"
        return f"{what}, replay from {spec.start} at {speed}"
    return f"{what}, live for {spec.duration_s:g} s"


def _enqueue(spec: Any, settings: Any) -> None:
    from backfarm._util.connection import check_redis
    from backfarm.farm.client import enqueue_paper

    check_redis(settings.require_redis_url())
    enqueue_paper(settings, spec)


def _spawn(session_id: str, settings: Any) -> None:
    """Run the session in a detached process on this machine (no Redis: nobody else could run it)."""
    logs = settings.data_dir / "paper"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "backfarm", "--data-dir", str(settings.data_dir), "paper", "run", session_id]
    cmd += [f"--strategy-path={path}" for path in state.strategy_paths]  # the files this command loaded
    with (logs / f"{session_id}.log").open("ab") as out:
        subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def _run_here(store: Any, session_id: str, settings: Any) -> None:
    """Run the session in a thread of this process and watch it; Ctrl-C stops it gracefully."""
    from backfarm.paper.session import run_session

    failure: list[BaseException] = []

    def target() -> None:
        try:
            run_session(store, session_id, settings)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which reports it
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"paper-{session_id}", daemon=True)
    thread.start()

    def stop_gracefully() -> bool:
        store.request_stop(session_id)
        state.err_console.print("stopping: the session ends with its current bar and writes its final metrics")
        return True

    _watch(store, session_id, on_interrupt=stop_gracefully, alive=thread.is_alive)
    thread.join()
    if failure:
        raise failure[0]


def _leave_running() -> bool:
    state.err_console.print("stopped watching: the session keeps running on the farm (`backfarm paper stop ID`)")
    return False


def _watch(
    store: Any, session_id: str, on_interrupt: Callable[[], bool], alive: Callable[[], bool] | None = None
) -> None:
    """A live table until the session ends; then the final table on stdout."""
    from backfarm.paper.store.base import DONE

    outage = Outage(state.settings().redis_outage_s)
    with Live(console=state.err_console, auto_refresh=False, transient=True) as live:
        while True:
            try:
                try:
                    info = store.get(session_id)
                except TemporaryError:  # the farm's Redis restarting or out of reach: keep watching, up to a limit
                    if (down := outage.failed()) is None:
                        raise
                    live.update(Text(f"Redis unreachable, waiting ({down:.0f} s)"), refresh=True)
                    time.sleep(REFRESH_S)
                    continue
                outage.answered()
                live.update(session_view(info), refresh=True)
                if info.status in DONE or (alive is not None and not alive()):
                    break
                time.sleep(REFRESH_S)
            except KeyboardInterrupt:
                if not on_interrupt():
                    return
                on_interrupt = _leave_running if alive is None else (lambda: False)
    info = store.get(session_id)
    if info is not None and info.status in DONE:
        state.console.print(session_view(info))


# --- status ------------------------------------------------------------------------------------------------------


@app.command("status")
def status(
    session_id: Annotated[
        str | None, typer.Argument(help="Session id or a unique prefix (default: all sessions).")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until the session ends.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """One session's accounts (equity, P&L, trades, position, quote age, warnings), or the list of sessions."""
    if fmt not in FORMATS:
        raise ValidationError(did_you_mean("format", fmt, FORMATS))
    with _open_store() as store:
        if session_id is None:
            infos = store.sessions()
            if fmt == "json":
                typer.echo(json.dumps([_summary(i) for i in infos], indent=2))
            elif not infos:
                state.console.print("no paper sessions yet: run `backfarm paper start`")
            else:
                state.console.print(sessions_table(infos))
            return
        sid = store.resolve(session_id)
        if watch and fmt == "table":
            _watch(store, sid, on_interrupt=lambda: False)
            return
        info = store.get(sid)
        if fmt == "json":
            typer.echo(json.dumps(_summary(info, detail=True), indent=2, default=str))
        else:
            state.console.print(session_view(info))


def _summary(info: Any, detail: bool = False) -> dict[str, Any]:
    cursor = info.cursor or {}
    out: dict[str, Any] = {
        "session_id": info.session_id,
        "status": info.display_status,
        "feed": info.spec.feed,
        "strategies": [name for name, _ in info.spec.strategies],
        "symbols": list(info.spec.symbols),
        "bars": cursor.get("bars_done", {}),
        "window_bars": info.spec.window_bars,
        "created_at": info.created_at,
        "resumes": info.resumes,
        "warnings": cursor.get("warnings", {}),
    }
    if detail:
        from backfarm.paper.report import account_rows

        out["accounts"] = account_rows(info, time.time())
        out["final"] = info.final
        out["error"] = info.error
        out["notes"] = cursor.get("notes", [])
    return out


def session_view(info: Any) -> Group:
    """The session's header, its accounts table and its warnings."""
    from backfarm.paper.report import account_rows

    spec, cursor = info.spec, info.cursor or {}
    state_text = info.status
    if info.orphaned:
        state_text = (
            "orphaned: its worker died; a paper worker resumes it"
            if state.settings().redis_url
            else f"orphaned: its process died; resume it with `backfarm paper run {spec.session_id}`"
        )
    header = Text.assemble(
        "paper session ",
        (spec.session_id, "bold"),
        f" · {state_text} · {_describe(spec)} · bar {info.bars_done:,}/{spec.window_bars:,}"
        + (f" · resumed {info.resumes}×" if info.resumes else ""),
    )
    parts: list[Any] = [header]
    if spec.replay:
        parts.append(Text(f"source: {source_label(spec.source)}"))
    table = Table(header_style="bold", title_justify="left")
    for col in ("account", "params", "equity", "P&L", "return", "trades", "position", "quote age"):
        table.add_column(col, justify="left" if col in ("account", "params") else "right")
    for row in account_rows(info, time.time()):
        age = row["quote_age_s"]
        table.add_row(
            row["account"],
            fmt_params(row["params"]),
            f"{row['equity']:,.2f}",
            f"{row['pnl']:+,.2f}",
            fmt_metric("total_return", row["return"]),
            f"{row['trades']:,}",
            f"{row['position']:.6g}" + (" *" if row["pending"] else ""),
            "—" if age is None else f"{age:.1f} s",
        )
    parts.append(table)
    for symbol, text in sorted(cursor.get("warnings", {}).items()):
        parts.append(Text(f"warning: {symbol}: {text}", style="yellow"))
    if info.error:
        parts.append(Text(f"error: {info.error}", style="red"))
    if info.status == "queued" and state.settings().redis_url:
        parts.append(Text("queued: waiting for a worker on the paper queue (`backfarm worker --queues paper`)"))
    if info.stop_requested and info.status == "running":
        parts.append(Text("stop requested: finishing the current bar"))
    return Group(*parts)


def sessions_table(infos: list[Any]) -> Table:
    """Every session, newest first."""
    from datetime import UTC, datetime

    table = Table(title="paper sessions", title_justify="left", header_style="bold")
    for col in ("session", "created (UTC)", "feed", "strategies", "symbols", "bars", "status"):
        table.add_column(col, justify="right" if col == "bars" else "left")
    for info in infos:
        table.add_row(
            info.session_id,
            datetime.fromtimestamp(info.created_at, UTC).strftime("%Y-%m-%d %H:%M"),
            info.spec.feed,
            ",".join(name for name, _ in info.spec.strategies),
            ",".join(info.spec.symbols),
            f"{info.bars_done:,}/{info.spec.window_bars:,}",
            info.display_status,
        )
    return table


# --- stop --------------------------------------------------------------------------------------------------------


@app.command("stop")
def stop(session_id: Annotated[str, typer.Argument(help="Session id or a unique prefix.")]) -> None:
    """End a session gracefully: its current bar is its last, positions are closed out, final metrics written."""
    from backfarm.paper.store.base import DONE

    with _open_store() as store:
        sid = store.resolve(session_id)
        info = store.get(sid)
        if info.status in DONE:
            state.console.print(f"paper session {sid} is already {info.status}")
            return
        store.request_stop(sid)
        state.console.print(f"stop requested for paper session {sid}: it ends with its current bar")


# --- report ------------------------------------------------------------------------------------------------------


@app.command("report")
def report(
    session_id: Annotated[str, typer.Argument(help="Session id or a unique prefix.")],
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    trades: Annotated[int, typer.Option(help="Reconciliation rows and fills shown per account.")] = 10,
) -> None:
    """Fills, metrics, equity curve and a trade-by-trade reconciliation against a backtest of the same window."""
    from backfarm.paper.report import build_report

    if fmt not in FORMATS:
        raise ValidationError(did_you_mean("format", fmt, FORMATS))
    if trades < 0:
        raise ValidationError(f"--trades must be >= 0, got {trades}")
    with _open_store() as store:
        sid = store.resolve(session_id)
        data = build_report(store, sid, state.settings())
    if fmt == "json":
        typer.echo(json.dumps(data, indent=2, default=_json_default))
        return
    _print_report(data, trades)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _print_report(data: dict[str, Any], limit: int) -> None:
    console = state.console
    head = data["session"]
    console.print(
        Text.assemble(
            "paper session ",
            (head["session_id"], "bold"),
            f" · {head['status']} · {head['feed']} · {head['granularity']} bars {head['window'][0]} → "
            f"{head['window'][1]} · warm-up {head['warmup']} bars",
        )
    )
    recon = data.get("reconciliation", {})
    table = Table(title="accounts: paper vs backtest", title_justify="left", header_style="bold")
    for col in ("account", "return", "bt return", "trades", "bt trades", "sharpe", "fees", "curve", "reconciliation"):
        table.add_column(col, justify="left" if col in ("account", "curve", "reconciliation") else "right")
    for acc in data["accounts"]:
        m = acc["metrics"] or {}
        r = recon.get("accounts", {}).get(acc["account"], {})
        bt = r.get("backtest_metrics") or {}
        if "error" in r:
            verdict = "not reconciled"
        else:
            verdict = "identical" if r.get("identical") else f"{_differences(r)} differ" if r else "—"
        table.add_row(
            acc["account"],
            fmt_metric("total_return", m.get("total_return")),
            fmt_metric("total_return", bt.get("total_return")),
            f"{len(acc['round_trips']):,}",
            str(bt.get("trades", "—")),
            fmt_metric("sharpe", m.get("sharpe")),
            fmt_metric("fees_paid", m.get("fees_paid")),
            sparkline([p[1] for p in acc["curve"]]),
            verdict,
        )
    console.print(table)
    if recon:
        console.print(f"reference: {recon.get('reference', '')}")
        unreconciled: dict[str, list[str]] = {}
        for key, r in recon.get("accounts", {}).items():
            if "error" in r:
                unreconciled.setdefault(r["error"], []).append(key)
        for why, keys in unreconciled.items():
            console.print(f"not reconciled ({', '.join(keys)}): {why}")
    for acc in data["accounts"]:
        r = recon.get("accounts", {}).get(acc["account"])
        if r and not r.get("identical") and "rows" in r:
            console.print(_recon_table(acc["account"], r, limit))
        if limit and acc["fills"]:
            console.print(_fills_table(acc["account"], acc["fills"][-limit:], len(acc["fills"])))
    for note in head.get("notes", [])[-5:]:
        console.print(f"note: {note}")


def _differences(r: dict[str, Any]) -> int:
    return sum(row["attribution"] != ["identical"] for row in r.get("rows", []))


def _recon_table(key: str, r: dict[str, Any], limit: int) -> Table:
    table = Table(title=f"{key}: trades that differ from the backtest", title_justify="left", header_style="bold")
    for col in ("entry bar", "paper entry→exit", "backtest entry→exit", "pnl paper", "pnl backtest", "why"):
        table.add_column(col, justify="left" if col in ("why", "paper entry→exit", "backtest entry→exit") else "right")
    rows = [row for row in r["rows"] if row["attribution"] != ["identical"]][: limit or None]
    for row in rows:
        p, b = row["paper"], row["backtest"]
        table.add_row(
            str(row["entry_bar"]),
            f"{p['entry_bar']}→{p['exit_bar']} @ {p['entry_price']:.6g}→{p['exit_price']:.6g}" if p else "—",
            f"{b['entry_bar']}→{b['exit_bar']} @ {b['entry_price']:.6g}→{b['exit_price']:.6g}" if b else "—",
            f"{p['pnl']:+.2f}" if p else "—",
            f"{b['pnl']:+.2f}" if b else "—",
            "; ".join(row["attribution"]),
        )
    return table


def _fills_table(key: str, fills: list[dict[str, Any]], total: int) -> Table:
    from backfarm._util.time import from_ns

    title = f"{key}: last {len(fills)} of {total} fills"
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in ("time (UTC)", "bar", "side", "qty", "price", "fee", "reason"):
        table.add_column(col, justify="right" if col in ("bar", "qty", "price", "fee") else "left")
    for f in fills:
        when = from_ns(f["time_ns"]).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            when, str(f["bar"]), f["side"], f"{f['qty']:.6g}", f"{f['price']:.6g}", f"{f['fee']:.2f}", f["reason"]
        )
    return table


def sparkline(values: list[float], width: int = 40) -> str:
    """A one-line equity curve."""
    if len(values) < 2:
        return ""
    points = (
        [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)] if len(values) > width else values
    )
    lo, hi = min(points), max(points)
    if hi <= lo:
        return _SPARK[0] * len(points)
    return "".join(_SPARK[int((v - lo) / (hi - lo) * (len(_SPARK) - 1))] for v in points)


# --- run ----------------------------------------------------------------------------------------------


@app.command("run")
def run(
    session_id: Annotated[str, typer.Argument(help="Session id or a unique prefix.")],
    strategy_path: options.StrategyPath = None,
) -> None:
    """Run a stored session in the foreground, resuming it from its checkpoint (local sessions run this)."""
    from backfarm.paper.session import run_session

    state.load_strategy_files(strategy_path)
    with _open_store() as store:
        sid = store.resolve(session_id)
        outcome = run_session(store, sid, state.settings())
    state.console.print(f"paper session {sid} {outcome.status}: {outcome.bars:,} bars, {outcome.fills:,} fills")
