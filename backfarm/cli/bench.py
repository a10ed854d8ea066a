"""``backfarm bench``: a thin command over the benchmark harness in the source tree's ``benchmarks/``.

The harness starts servers and worker processes and reads ``/proc``; it is a tool of the repository, not part of the
installed package, so this command finds it next to the package's source (a clone, or an editable install) and says
how to get it otherwise. A benchmark that fails is a failure (exit 1), not a user error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from backfarm.cli import state
from backfarm.errors import ConfigError, ValidationError

# Commands import what they run inside their bodies, so `backfarm --help` stays fast (no engine, store or Celery).

STANDARD_DAYS = 30
SYMBOLS = 5
"""The standard sweep's symbol count (BTC, ETH, SOL, LINK and POL against USD)."""
SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""The repository root when backfarm runs from its source tree (where ``benchmarks/`` lives)."""


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""
    app.command("bench")(bench)


def bench(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    repeats: Annotated[int, typer.Option(help="Timed runs per figure (the median is reported).")] = 3,
    days_scaling: Annotated[
        bool, typer.Option("--days-scaling", help="Also time the sweep on 30, 90 and 365 days of bars.")
    ] = False,
    references: Annotated[
        bool, typer.Option("--references/--no-references", help="Compare with vectorbt and backtesting.py.")
    ] = True,
    farm: Annotated[
        bool | None,
        typer.Option("--farm/--no-farm", help="Time the farm with 1 and 2 workers (default: when Redis is set)."),
    ] = None,
    store: Annotated[
        bool, typer.Option("--store/--no-store", help="Time the result store at --store-size results.")
    ] = True,
    store_size: Annotated[int, typer.Option(help="Results in the big store.")] = 1_000_000,
    days: Annotated[int, typer.Option(help="Days of 1-minute bars per window.")] = STANDARD_DAYS,
    symbols: Annotated[int, typer.Option(help="Symbols in the sweep (1-5).")] = SYMBOLS,
    strategies: Annotated[str | None, typer.Option(help="Comma-separated strategies (default: all five).")] = None,
    scaling_days: Annotated[str, typer.Option(help="Window lengths for --days-scaling.")] = "30,90,365",
) -> None:
    """Benchmark backfarm: backtests/s on the standard sweep (embedded, farm), the 25-backtest screen, peak memory,
    the result store at a million results, scaling with bars, and ratios to vectorbt and backtesting.py."""
    if repeats < 1:
        raise ValidationError(f"--repeats must be at least 1, got {repeats}")
    if days < 1:
        raise ValidationError(f"--days must be at least 1, got {days}")
    if store_size < 1:
        raise ValidationError(f"--store-size must be at least 1, got {store_size}")
    if not 1 <= symbols <= SYMBOLS:
        raise ValidationError(f"--symbols must be between 1 and {SYMBOLS}, got {symbols}")
    lengths = _parse_days(scaling_days)
    _use_source_tree()
    # Imported here: the harness lives in the source tree (found just above), and loads everything it measures.
    from backfarm.strategies.registry import get_strategy
    from backfarm.sweeps.spec import split_list
    from benchmarks.common import STANDARD_SYMBOLS, BenchmarkFailed, Plan
    from benchmarks.harness import run_bench
    from benchmarks.report import json_default, print_report

    for name in split_list(strategies):
        get_strategy(name)  # unknown names: "did you mean", before anything runs
    settings = state.settings()
    plan = Plan(
        repeats=repeats,
        days=days,
        symbols=STANDARD_SYMBOLS[:symbols],
        strategies=strategies,
        scaling=lengths if days_scaling else (),
        references=references,
        farm=farm if farm is not None else bool(settings.redis_url),
        redis_url=settings.redis_url,
        store=store,
        store_size=store_size,
    )
    progress = (lambda text: None) if as_json else (lambda text: state.err_console.print(text, style="dim"))
    try:
        report = run_bench(plan, settings, progress)
    except BenchmarkFailed as exc:
        typer.echo(f"error: the benchmark failed: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if as_json:
        typer.echo(json.dumps(report, indent=1, default=json_default))
    else:
        print_report(report, state.console)


def _use_source_tree() -> None:
    """Make the repository's ``benchmarks`` (and the ``tests`` helpers it shares) importable, or say where to get
    them: a wheel installs the package only."""
    if not (SOURCE_ROOT / "benchmarks" / "harness.py").is_file():
        raise ConfigError(
            "`backfarm bench` runs the benchmark harness of backfarm's source tree, which this installation does not "
            "have: clone the repository and run `make bench` there"
        )
    if str(SOURCE_ROOT) not in sys.path:
        sys.path.insert(0, str(SOURCE_ROOT))


def _parse_days(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValidationError(f"--scaling-days must be comma-separated whole days, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ValidationError(f"--scaling-days must be positive whole days, got {text!r}")
    return values
