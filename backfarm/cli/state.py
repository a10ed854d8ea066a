"""Process-wide CLI state set by the root callback: verbosity and the settings every command reads."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from rich.console import Console

from backfarm.config import Settings

verbose = False
_settings: Settings | None = None
_overrides: dict[str, object] = {}

# Piped output (files, CI logs) gets wide tables instead of rich's 80-column fallback.
console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)
"""Results go to stdout."""
err_console = Console(stderr=True, highlight=False)
"""Progress and warnings go to stderr, so ``--format json`` output stays clean."""


def configure(verbose: bool = False, data_dir: Path | None = None, redis: str | None = None) -> None:
    """Remember the global flags (called by the root callback)."""
    globals()["verbose"] = verbose
    # Warnings (e.g. a corrupt cache file moved aside) are one line for people, not a source excerpt.
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    globals()["_settings"] = None
    _overrides.clear()
    _overrides.update({"data_dir": data_dir.expanduser() if data_dir else None, "redis_url": redis})


def settings() -> Settings:
    """Settings from ``BACKFARM_*`` env, overridden by the global flags; read once per invocation."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env().with_(**_overrides)
    return _settings
