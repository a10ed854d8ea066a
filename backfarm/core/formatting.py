"""How metrics, parameters and windows read as text: shared by the terminal tables, the dashboard and the PNG plot.

Pure string formatting (no rich, no typer), so any part of the package may import it.
"""

from __future__ import annotations

from typing import Any

from backfarm.core.jobs import LOOKAHEAD_LABEL

PERCENT: tuple[str, ...] = ("total_return", "cagr", "volatility", "max_drawdown", "win_rate", "avg_trade", "exposure")
"""Metrics shown as percentages (the terminal tables, the dashboard page and the plot)."""
_SIGNED = frozenset({"total_return", "cagr", "avg_trade", "max_drawdown"})


def strategy_label(name: str, version: str) -> str:
    """A strategy's name as tables show it: flagged when it ran despite failing the lookahead check."""
    return f"{name} (LOOKAHEAD)" if version.endswith(LOOKAHEAD_LABEL) else name


def fmt_metric(name: str, value: float | int | None) -> str:
    """A metric for a table cell: percentages for return-like metrics, '—' for undefined."""
    if value is None:
        return "—"
    if name in PERCENT:
        return f"{value * 100:+.2f}%" if name in _SIGNED else f"{value * 100:.1f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.3f}"


def fmt_params(params: dict[str, Any]) -> str:
    """``fast=10 slow=30``."""
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def short_window(start: str, end: str) -> str:
    """``2026-10-24→11-23`` style window label."""
    s, e = start[:10], end[:10]
    return f"{s}→{e[5:] if e[:4] == s[:4] else e}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 job``, ``1,285 jobs``: a count with thousands separators and the noun in the right number."""
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"


def per_second(rate: float) -> str:
    """A rate for people: two significant digits below 10 (``0.42/s``, ``7.3/s``), whole numbers with thousands
    separators above (``4,794/s``); ``—`` before anything was measured (not ``0/s``)."""
    if not rate > 0.0:
        return "—"
    if rate < 10.0:
        return f"{rate:.2g}/s"
    return f"{rate:,.0f}/s"
