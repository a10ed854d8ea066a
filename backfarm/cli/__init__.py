"""The Typer CLI: the root app, global options, and the one place that maps errors to exit codes.

User errors (:class:`~backfarm.errors.UserError`) print one line on stderr and exit 2; temporary errors exit 3;
an interrupt exits 130. Anything else is a bug and keeps its traceback. ``--verbose`` shows tracebacks for all.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # Typer vendors click as ``typer._click`` since 0.20; before, it used click itself
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - an older Typer
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment]

from backfarm import __version__
from backfarm.cli import state
from backfarm.errors import BackfarmError

# Commands import what they run inside their bodies, so `backfarm --help` stays fast (no engine, store or Celery).

GLOBAL_VALUE_OPTIONS = ("--redis", "--data-dir")
"""Global options that may also be written after the command (``backfarm backtest --redis URL ...``)."""


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options given after the command to the front, so they work in either place."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in GLOBAL_VALUE_OPTIONS and i + 1 < len(args):
            front += [arg, args[i + 1]]
            i += 2
            continue
        if arg.split("=", 1)[0] in GLOBAL_VALUE_OPTIONS and "=" in arg:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # every control character but tab and newline


def printable(text: str) -> str:
    """``text`` without terminal control characters: an error may quote what a file or a server sent (a header with
    escape sequences must not recolour or rewrite the terminal), so each control character but tab and newline shows
    as its ``\\xNN`` code instead."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _usage_error(exc: Any) -> None:
    """A mistyped command line as every other user error: one line on stderr, exit 2 (not click's usage box).
    Asking for a group's commands by giving none (``no_args_is_help``) still shows the help."""
    if isinstance(exc, NoArgsIsHelpError):
        raise exc
    where = exc.ctx.command_path if exc.ctx is not None else "backfarm"
    typer.echo(f"error: {printable(exc.format_message())} (see `{where} --help`)", err=True)
    raise typer.Exit(code=2) from None


class _Group(TyperGroup):
    """Root command group: global options anywhere; backfarm errors → a one-line message and an exit code."""

    # ``ctx`` is click's Context, or the one typer vendors in newer releases: either works here.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            _usage_error(exc)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:  # a subcommand's options or arguments: parsed here, inside the group's invoke
            _usage_error(exc)
        except BackfarmError as exc:
            if state.verbose:
                raise
            typer.echo(f"error: {printable(str(exc))}", err=True)
            raise typer.Exit(code=getattr(exc, "exit_code", 1)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(code=130) from None


app = typer.Typer(
    cls=_Group,
    name="backfarm",
    help="A distributed backtesting farm for crypto strategies.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # the Coinbase key may be a local somewhere: never print locals
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"backfarm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks for every error.")] = False,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Cache and result directory (env BACKFARM_DATA_DIR).")
    ] = None,
    redis: Annotated[
        str | None, typer.Option("--redis", help="Redis URL of the farm (env BACKFARM_REDIS_URL).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """backfarm: sweeps of strategies × parameters × symbols × windows, run locally or on a Celery farm."""
    state.configure(verbose=verbose, data_dir=data_dir, redis=redis)


def _register() -> None:
    from backfarm.cli import backtest, bench, coinbase, dashboard, data, farm, leaderboard, paper, store, strategies

    backtest.register(app)
    leaderboard.register(app)
    farm.register(app)
    dashboard.register(app)
    bench.register(app)
    app.add_typer(data.app, name="data", help="Candle cache: import, fetch, list.")
    app.add_typer(strategies.app, name="strategies", help="List strategies and check them for lookahead.")
    app.add_typer(store.app, name="store", help="The embedded result store: size, merging its files, migrating.")
    app.add_typer(coinbase.app, name="coinbase", help="Coinbase: key check, live quotes and the local simulator.")
    app.command("sim", help="Run the Coinbase-compatible simulator (same as `backfarm coinbase sim`).")(coinbase.sim)
    app.add_typer(paper.app, name="paper", help="Paper trading: live quotes or replayed candles, simulated fills.")


_register()


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())
