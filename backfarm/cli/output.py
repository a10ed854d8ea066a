"""How results look: rich tables for people, JSON and CSV for machines, and one row shape for files."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from backfarm.core.formatting import fmt_metric, fmt_params, short_window, strategy_label
from backfarm.core.results import AggregateRow, ResultRecord, SweepInfo

SYNTHETIC_NOTE = "synthetic (generated candles, not market data)"


def source_label(source: str) -> str:
    """The source as shown to people; synthetic results always say so."""
    return SYNTHETIC_NOTE if source == "synthetic" else source


def top_table(records: Sequence[ResultRecord], metric: str, title: str, offset: int = 0) -> Table:
    """The ranked leaderboard table."""
    table = Table(title=title, title_justify="left", header_style="bold")
    cols = ["#", "strategy", "params", "symbol", "window", "return", "sharpe", "max dd", "trades", "win rate"]
    extra = metric not in {"total_return", "sharpe", "max_drawdown", "trades", "win_rate"}
    if extra:
        cols.append(metric)
    cols.append("job")
    for col in cols:
        table.add_column(
            col,
            justify="right"
            if col in {"#", "return", "sharpe", "max dd", "trades", "win rate"} or col == metric
            else "left",
        )
    for i, r in enumerate(records, start=1 + offset):
        m = r.metrics
        row = [
            str(i),
            strategy_label(r.strategy, r.strategy_version),
            fmt_params(r.params),
            r.symbol,
            short_window(r.start, r.end),
            fmt_metric("total_return", m.get("total_return")),
            fmt_metric("sharpe", m.get("sharpe")),
            fmt_metric("max_drawdown", m.get("max_drawdown")),
            fmt_metric("trades", m.get("trades")),
            fmt_metric("win_rate", m.get("win_rate")),
        ]
        if extra:
            row.append(fmt_metric(metric, m.get(metric)))
        row.append(r.job_id[:10])
        table.add_row(*row)
    return table


def aggregate_table(rows: Sequence[AggregateRow], by: str, title: str) -> Table:
    """The per-strategy (or per-symbol) table: the seeds' summary."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in (by, "results", "avg return", "avg sharpe", "worst drawdown", "trades", "win rate"):
        table.add_column(col, justify="left" if col == by else "right")
    for row in rows:
        table.add_row(
            row.key,
            f"{row.results:,}",
            fmt_metric("total_return", row.mean_return),
            fmt_metric("sharpe", row.mean_sharpe),
            fmt_metric("max_drawdown", row.worst_drawdown),
            f"{row.trades:,}",
            fmt_metric("win_rate", row.win_rate),
        )
    return table


def sweeps_table(sweeps: Iterable[SweepInfo]) -> Table:
    """All sweeps with their progress, newest first."""
    table = Table(title="sweeps", title_justify="left", header_style="bold")
    for col in ("sweep", "created (UTC)", "source", "strategies", "symbols", "jobs", "done", "dead", "state"):
        table.add_column(col, justify="right" if col in {"jobs", "done", "dead"} else "left")
    for s in sweeps:
        spec = s.spec or {}
        state = "complete" if s.complete else "running/partial"
        table.add_row(
            s.sweep_id,
            datetime.fromtimestamp(s.created_at, UTC).strftime("%Y-%m-%d %H:%M"),
            s.source,
            ",".join(spec.get("strategies", [])),
            ",".join(spec.get("symbols", [])),
            f"{s.total:,}",
            f"{s.done:,}",
            f"{s.dead:,}",
            state,
        )
    return table


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text with the union of all columns, in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
