"""See the results: a read-only web dashboard, self-contained HTML reports and PNG equity plots.

- :mod:`backfarm.dashboard.data` turns store contents into JSON-ready dicts (shared by the server and the report).
- :mod:`backfarm.dashboard.server` serves the page and its polling JSON endpoints (aiohttp, 127.0.0.1 by default).
- :mod:`backfarm.dashboard.report` writes one HTML file with every script, style and datum inline.
- :mod:`backfarm.dashboard.plot` renders a result's equity curve to PNG with numpy alone.

The page is plain JavaScript (``static/app.js``, and the artifact codec in ``static/codec.js``) over a vendored copy
of uPlot (``static/vendor``, MIT): no build step and no request leaves the machine.
"""

from __future__ import annotations

from pathlib import Path

from backfarm.errors import ConfigError

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The page, its script and style, and the vendored chart library."""
ASSETS: tuple[str, ...] = (
    "index.html",
    "codec.js",
    "app.js",
    "app.css",
    "vendor/uPlot.iife.min.js",
    "vendor/uPlot.min.css",
)

# Defaults of the server, the report and their commands (here, so the CLI reads them without importing aiohttp).
DEFAULT_PORT = 8888
DEFAULT_REFRESH_S = 3.0
"""Seconds between the page's updates."""
DEFAULT_ROWS = 1000
"""Most result rows a report includes."""
DEFAULT_CHARTS = 20
"""Equity curves a report includes (of its best rows)."""


def check_assets() -> Path:
    """``STATIC_DIR`` if every file the page needs is there, else a :class:`ConfigError` saying what is missing."""
    missing = [name for name in ASSETS if not (STATIC_DIR / name).is_file()]
    if missing:
        raise ConfigError(
            f"this backfarm installation lacks the dashboard's files ({', '.join(missing)} in {STATIC_DIR}); "
            "reinstall it from a source tree that has them (they are package data)"
        )
    return STATIC_DIR
