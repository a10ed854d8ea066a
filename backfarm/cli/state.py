"""Process-wide CLI state set by the root callback: verbosity and the settings every command reads.

The strategy registry is imported inside :func:`load_strategy_files`, as commands import what they run: loading it
compiles numba kernels, which `backfarm --help` must not pay for.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn

from backfarm.config import Settings
from backfarm.errors import ConfigError

verbose = False
_settings: Settings | None = None
_overrides: dict[str, object] = {}
strategy_paths: list[Path] = []
"""The strategy files this command loaded (``--strategy-path``)."""

# Piped output (files, CI logs) gets wide tables instead of rich's 80-column fallback. No markup: what we print holds
# user text (strategy rules such as ``close[t]``, parameter ranges ``[2, 5000]``) that rich would take for tags and
# drop; styles are given as styles (``Text.assemble``, ``style=``), never as ``[bold]`` in a string.
console = Console(highlight=False, soft_wrap=False, markup=False, width=None if sys.stdout.isatty() else 160)
"""Results go to stdout."""
err_console = Console(stderr=True, highlight=False, markup=False)
"""Progress and warnings go to stderr, so ``--format json`` output stays clean."""


def progress_bar(label: str, *columns: str | ProgressColumn) -> Progress:
    """A transient progress bar on stderr: ``label`` in bold, the bar, done / total, then ``columns``. Shown on a
    terminal only: a log or a pipe gets no bar (and not the newline a stopped bar leaves behind)."""
    return Progress(
        TextColumn(label, style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        *columns,
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


def configure(verbose: bool = False, data_dir: Path | None = None, redis: str | None = None) -> None:
    """Remember the global flags (called by the root callback)."""
    globals()["verbose"] = verbose
    _setup_logging(verbose)
    globals()["_settings"] = None
    _overrides.clear()
    _overrides.update({"data_dir": data_dir.expanduser() if data_dir else None, "redis_url": redis})


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it per invocation)."""

    _backfarm_cli = True

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _setup_logging(verbose: bool) -> None:
    """backfarm's log warnings (a corrupt cache file moved aside, a retried request) as one line each on stderr.

    Modules both log and ``warnings.warn`` such events (library users see the latter); the CLI shows the log line only.
    """
    logger = logging.getLogger("backfarm")
    if not any(getattr(h, "_backfarm_cli", False) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    for handler in logger.handlers:
        if getattr(handler, "_backfarm_cli", False):
            handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if verbose else "warning: %(message)s"))
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    warnings.filterwarnings("ignore", module="backfarm")
    warnings.filterwarnings("ignore", category=UserWarning, message="corrupt candle cache")


def settings() -> Settings:
    """Settings from ``BACKFARM_*`` env, overridden by the global flags; read once per invocation."""
    global _settings
    if _settings is None:
        chosen = Settings.from_env().with_(**_overrides)
        if chosen.data_dir.exists() and not chosen.data_dir.is_dir():
            raise ConfigError(f"the data directory {chosen.data_dir} is a file (--data-dir / BACKFARM_DATA_DIR)")
        _settings = chosen
    return _settings


def load_strategy_files(paths: list[Path] | None) -> list[str]:
    """Load ``--strategy-path`` files into the registry and return the strategy names they define (a local pool
    forks after this, so its processes have them too; :data:`strategy_paths` keeps them for a spawned process)."""
    strategy_paths.clear()
    if not paths:
        return []
    from backfarm.strategies.files import split_paths
    from backfarm.strategies.registry import load_paths

    strategy_paths.extend(split_paths(str(p) for p in paths))
    return load_paths(strategy_paths)
