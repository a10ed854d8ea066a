"""``backfarm report``: one self-contained HTML file per sweep — the dashboard's page with its data inside.

The file is the dashboard page with every stylesheet and script inlined and the data in a
``<script type="application/json">`` block; the page's script then runs in report mode (sorting and filtering in
the browser, nothing fetched). A Content-Security-Policy meta tag forbids every network request, so the report
works offline and cannot phone home even by accident.

What goes in: the sweep and its progress, the per-strategy table, leaderboard rows (every result when there are at
most ``rows``, else the best ``rows`` by the chosen metric, and the page says so), and the stored equity curves and
trades of the best ``charts`` results.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backfarm import __version__
from backfarm.candles.memo import CandleMemo
from backfarm.config import Settings
from backfarm.core.results import Filters, ResultRecord
from backfarm.dashboard import DEFAULT_CHARTS, DEFAULT_ROWS, STATIC_DIR, check_assets, data
from backfarm.dashboard.recompute import with_curve
from backfarm.errors import ValidationError
from backfarm.results import ranking
from backfarm.results.store import ResultStore

CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
"""The report's own policy: inline code and data only, no request of any kind."""

_LINK = re.compile(r'<link rel="stylesheet" href="/static/([^"]+)">')
_SCRIPT = re.compile(r'<script src="/static/([^"]+)"></script>')


@dataclass(frozen=True)
class ReportSummary:
    """What a written report holds."""

    sweep_id: str
    results: int
    rows: int
    charts: int
    bytes: int


def report_data(
    store: ResultStore,
    sweep: str,
    metric: str = data.DEFAULT_METRIC,
    rows: int = DEFAULT_ROWS,
    charts: int = DEFAULT_CHARTS,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Everything the report page shows for ``sweep`` (an id or a unique prefix).

    With ``settings``, charted results stored without a curve get one recomputed from cached candles.
    """
    ranking.check_metric(metric)
    if rows < 0 or charts < 0:
        raise ValidationError("--rows and --charts must be >= 0")
    info = store.sweep(sweep)
    if info is None:
        raise ValidationError(f"unknown sweep '{sweep}' (see `backfarm sweeps`)")
    filters = Filters(sweep=info.sweep_id)
    if rows == 0 or info.done <= rows:
        records = ranking.rank(store.iter_results(filters), metric)
    else:
        records = store.top(metric, rows, filters)
    best: list[ResultRecord] = records[:charts]
    if settings is not None and any("equity" not in r.extra for r in best):
        memo = CandleMemo(settings)  # one memo shares candles across the recomputed curves
        best = [with_curve(r, settings, memo)[0] for r in best]
    sweep_row = data.sweep(info)
    charted = {r.job_id for r in best if "equity" in r.extra}
    return {
        "mode": "report",
        "generated_at": time.time(),
        "sweep_id": info.sweep_id,
        "meta": {**data.meta(f"report of sweep {info.sweep_id}", 0.0, __version__), "default_metric": metric},
        "sweeps": [sweep_row],
        "facets": data.facets([sweep_row]),
        "total": info.done,
        "metric": metric,
        # Only the charted results carry their curve in the file; the page offers curves for those alone.
        "rows": [{**data.row(r), "has_curve": r.job_id in charted} for r in records],
        "charts": len(best),
        "details": {r.job_id: data.detail(r) for r in best},
        "strategies": data.strategies(store, filters),
        "paper": [],
    }


def _inline(match: re.Match[str], tag: str) -> str:
    text = (STATIC_DIR / match.group(1)).read_text(encoding="utf-8")
    if f"</{tag}" in text.lower():
        raise ValueError(f"{match.group(1)} contains '</{tag}' and cannot be inlined")
    return f"<{tag}>\n{text}\n</{tag}>"


def render(payload: dict[str, Any]) -> str:
    """The report HTML: the dashboard page, assets inlined, ``payload`` embedded, network forbidden."""
    page = (check_assets() / "index.html").read_text(encoding="utf-8")
    page = _LINK.sub(lambda m: _inline(m, "style"), page)
    # The data must precede the page's script; "<" is escaped so no string in it can close the script element.
    blob = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    data_tag = f'<script id="backfarm-data" type="application/json">{blob}</script>\n'
    first = _SCRIPT.search(page)
    if first is None:
        raise ValueError("index.html has no script tag to inline")
    page = page[: first.start()] + data_tag + page[first.start() :]
    page = _SCRIPT.sub(lambda m: _inline(m, "script"), page)
    head = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
    page = page.replace('<meta charset="utf-8">\n', '<meta charset="utf-8">\n' + head, 1)
    title = f"backfarm report · sweep {payload['sweep_id'][:12]}"
    return page.replace("<title>backfarm dashboard</title>", f"<title>{title}</title>", 1)


def write_report(
    store: ResultStore,
    sweep: str,
    out: Path,
    metric: str = data.DEFAULT_METRIC,
    rows: int = DEFAULT_ROWS,
    charts: int = DEFAULT_CHARTS,
    settings: Settings | None = None,
) -> ReportSummary:
    """Write the report of ``sweep`` to ``out`` (atomically: a temporary file renamed into place)."""
    payload = report_data(store, sweep, metric, rows, charts, settings)
    html = render(payload)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return ReportSummary(
        sweep_id=payload["sweep_id"],
        results=payload["total"],
        rows=len(payload["rows"]),
        charts=payload["charts"],
        bytes=len(html.encode()),
    )
