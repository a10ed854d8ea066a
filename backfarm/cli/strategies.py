"""``backfarm strategies``: list the registered strategies and check them for lookahead."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from backfarm.cli import options, state

if TYPE_CHECKING:
    from backfarm.strategies.base import Param

# Commands import what they run inside their bodies, so `backfarm --help` stays fast (no engine, store or Celery).

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_(strategy_path: options.StrategyPath = None) -> None:
    """Every strategy: where it comes from (built-in, plugin, file:line) and its identity (version, code hash), its
    parameters (default, bounds, step, log scale), default grid size and rule."""
    from backfarm.strategies.registry import all_strategies, origin

    state.load_strategy_files(strategy_path)
    table = Table(title="strategies", title_justify="left", header_style="bold", show_lines=True)
    for col in ("name", "from", "identity", "parameters (default [low, high])", "grid", "rule"):
        table.add_column(col)
    for name, strategy in sorted(all_strategies().items()):
        params = "\n".join(_param(p) for p in strategy.params)
        rules = "; ".join(r.text for r in strategy.rules)
        grid = sum(1 for _ in strategy.default_grid())
        found = origin(name)
        where = found.kind if found.kind == "built-in" else f"{found.kind} {_relative(found.where)}"
        table.add_row(
            name, where, found.identity, params + (f"\nrule: {rules}" if rules else ""), str(grid), strategy.describe()
        )
    state.console.print(table)


def _relative(where: str) -> str:
    """A file strategy's ``path:line`` relative to the working directory when it lies below it (shorter to read)."""
    path = Path(where)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else where


def _param(p: Param) -> str:
    """``period=14 [2, 200] step 1 log``: a parameter's default, bounds and how a search moves in them."""
    extra = (f" step {p.step}" if p.step is not None else "") + (" log" if p.log else "")
    return f"{p.name}={p.default} [{p.low}, {p.high}]{extra}"


@app.command("check")
def check(
    names: Annotated[list[str] | None, typer.Argument(help="Strategies to check (default: all).")] = None,
    symbol: Annotated[str, typer.Option(help="Product whose synthetic candles are used.")] = "BTC-USD",
    days: Annotated[int, typer.Option(help="Days of 1-minute synthetic candles to test on.")] = 5,
    cuts: Annotated[int, typer.Option(help="Truncation points per parameter set.")] = 25,
    strategy_path: options.StrategyPath = None,
) -> None:
    """Lookahead test: each strategy's exposure on the full series must equal its exposure on the series cut after
    bar t, for every bar ≤ t; t is every bar of the first max(1,000, 3 × warm-up) and random bars beyond. Exits 1
    naming the strategy and the first bar that differs."""
    from backfarm.strategies.check import check_strategy
    from backfarm.strategies.registry import all_strategies, get_strategy
    from backfarm.sweeps.lookahead import check_candles

    candles = check_candles(state.settings(), symbol, days)
    loaded = state.load_strategy_files(strategy_path)
    chosen = names or loaded  # with --strategy-path and no names: the files' strategies
    strategies = [get_strategy(n) for n in chosen] if chosen else list(all_strategies().values())
    failed = 0
    for strategy in strategies:
        report = check_strategy(strategy, candles, cuts=cuts)
        if report.ok:
            state.console.print(
                Text.assemble(("ok", "green"), f"   {report.name}: {report.checked:,} truncations agree")
            )
        else:
            failed += 1
            state.console.print(Text.assemble(("FAIL", "red"), f" {report.message}"))
    if failed:
        raise typer.Exit(code=1)
