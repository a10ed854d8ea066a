"""Pictures without a recompute: every result keeps a downsampled equity curve and its trade list in ``extra``.

The embedded sweep runs thousands of backtests per second and the parent process serialises every record to JSON,
so the artifacts are built and stored cheaply:

- The curve is cut to at most :data:`MAX_POINTS` points by vectorised min/max bucketing (one ``reshape``, one
  ``argmin`` and one ``argmax``): every bucket keeps its lowest and highest point, so the curve's highs and lows
  survive, and a drawdown drawn from it misses at most a peak inside the trough's own bucket.
- Each artifact is one base64 string of little-endian typed columns laid end to end (``float32`` values, ``uint32``
  bar indices, ``uint8`` exit codes), not JSON lists: JSON-encoding 1,000 numbers costs 60–140 µs, one base64 string
  a few µs, and the bytes are about half the size. :func:`decode_equity` / :func:`decode_trades` (Python) and the
  dashboard's JavaScript split them back into arrays.
- The trade list is capped at :data:`MAX_TRADES` round trips; beyond that it keeps the ones with the largest
  absolute P&L (those that shaped the curve), in the order they closed, and says how many there were in all.

Layout of ``extra`` (format version 1); ``k`` is the number of rows, ``data`` holds each column's ``k`` values in turn::

    equity: {v: 1, n: bars in the window, t0: first bar open (epoch s), dt: bar seconds, k, iw: 2 or 4,
             data: step <u2 or <u4 (bar minus the previous point's bar; the first from 0) | equity <f4}
    trades: {v: 1, n: closed round trips, k: round trips kept,
             data: entry_bar <u4 | exit_bar <u4 | entry_price, exit_price, qty, pnl, ret <f4 | reason u1}

Equity is marked at a bar's close, so a point's time is ``t0 + (bar + 1) × dt`` (bars are regularly spaced once
gaps are filled); a trade's entry and exit times are the open times ``t0 + bar × dt`` of its entry and exit bars.
Exit reasons: 0 signal, 1 stop, 2 target, 3 end. Size: 6 bytes per point and 29 per trade, plus a third for
base64 — at most about 6 KB (500 points, 50 trades), typically 2–5 KB.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from backfarm.candles.schema import NS_PER_SECOND, Candles
from backfarm.engine.backtest import BacktestResult, Trades
from backfarm.errors import ValidationError

FORMAT = 1
MAX_POINTS = 500
"""Points kept of an equity curve (first, last, and a min and a max per bucket)."""
MAX_TRADES = 50
"""Round trips kept per result; more are cut to the largest by absolute P&L (the chart's markers and table)."""
EXIT_REASONS: tuple[str, ...] = tuple(Trades.names[i] for i in sorted(Trades.names))
TRADE_FLOATS: tuple[str, ...] = ("entry_price", "exit_price", "qty", "pnl", "ret")
EQUITY_LAYOUTS: dict[int, tuple[tuple[str, str], ...]] = {
    2: (("step", "<u2"), ("equity", "<f4")),
    4: (("step", "<u4"), ("equity", "<f4")),
}
"""Columns of the equity blob by the width of its bar steps (``iw``), in stored order (each ``k`` values)."""
TRADES_LAYOUT: tuple[tuple[str, str], ...] = (
    ("entry_bar", "<u4"),
    ("exit_bar", "<u4"),
    *((name, "<f4") for name in TRADE_FLOATS),
    ("reason", "u1"),
)
"""Columns of the trades blob, in stored order (each ``k`` values)."""


def downsample_minmax(values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Sorted, unique int64 indices of at most ``max_points`` points that keep the shape of ``values``.

    The first and last points are always kept. The interior is cut into equal buckets (one ``reshape``) plus a
    shorter tail bucket, and each bucket contributes the index of its minimum and of its maximum.
    """
    if max_points < 6:
        raise ValidationError(f"max_points must be at least 6, got {max_points}")
    n = len(values)
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    inner = n - 2
    buckets = (max_points - 2) // 2 - 1  # one bucket's worth of points is reserved for the tail
    size = -(-inner // buckets)
    full = inner // size
    body = values[1 : 1 + full * size].reshape(full, size)
    base = np.arange(1, 1 + full * size, size, dtype=np.int64)
    lo, hi = base + body.argmin(axis=1), base + body.argmax(axis=1)
    start = 1 + full * size
    tail = values[start : n - 1]
    tail_picks = sorted((start + int(tail.argmin()), start + int(tail.argmax()))) if len(tail) else []
    picks = np.empty(2 * full + 2 + len(tail_picks), dtype=np.int64)
    picks[0], picks[-1] = 0, n - 1
    picks[1 : 2 * full + 1 : 2] = np.minimum(lo, hi)
    picks[2 : 2 * full + 2 : 2] = np.maximum(lo, hi)
    picks[2 * full + 1 : -1] = tail_picks
    # Flat buckets give argmin == argmax; drop the repeats (picks is already sorted).
    keep = np.empty(len(picks), dtype=bool)
    keep[0] = True
    np.not_equal(picks[1:], picks[:-1], out=keep[1:])
    return picks[keep]


def _b64(*arrays: np.ndarray) -> str:
    """Base64 of the arrays' bytes, concatenated (each already in its stored dtype)."""
    return base64.b64encode(b"".join(a.tobytes() for a in arrays)).decode("ascii")


def equity_artifact(equity: np.ndarray, t0: int, dt: int, bars: np.ndarray | None = None) -> dict[str, Any]:
    """The stored form of an equity curve whose bar 0 opens at ``t0`` (epoch seconds), ``dt`` seconds per bar.

    ``bars`` numbers the values when they are not simply bars 0, 1, 2, ... (a live session that missed some).
    """
    idx = downsample_minmax(equity)
    picked = idx if bars is None else bars[idx]
    # Bar numbers as steps from the previous point: 2 bytes each, unless a step reaches 65,536 bars.
    steps = np.empty_like(picked)
    steps[:1] = picked[:1]
    np.subtract(picked[1:], picked[:-1], out=steps[1:])
    width = 2 if len(steps) == 0 or steps.max() < 2**16 else 4
    return {
        "v": FORMAT,
        "n": len(equity) if bars is None else int(bars[-1]) + 1,
        "t0": t0,
        "dt": dt,
        "k": len(idx),
        "iw": width,
        "data": _b64(steps.astype(f"<u{width}"), equity[idx].astype("<f4")),
    }


def trades_artifact(trades: Trades, max_trades: int = MAX_TRADES) -> dict[str, Any]:
    """The stored form of a trade list: every round trip, or the ``max_trades`` with the largest absolute P&L."""
    n = len(trades)
    bars = np.stack((trades.entry_bar, trades.exit_bar)).astype("<u4")
    floats = np.stack([getattr(trades, name) for name in TRADE_FLOATS]).astype("<f4")
    reason = trades.exit_reason.astype("u1")
    if n > max_trades:
        keep = np.sort(np.argpartition(-np.abs(trades.pnl), max_trades - 1)[:max_trades])
        bars, floats, reason = bars[:, keep], floats[:, keep], reason[keep]
    return {"v": FORMAT, "n": n, "k": len(reason), "data": _b64(bars, floats, reason)}


def artifacts(result: BacktestResult, candles: Candles) -> dict[str, Any]:
    """``extra`` for a recorded backtest (``run_backtest(..., record=True)``); ``{}`` when nothing was recorded."""
    if result.equity is None or result.trades is None:
        return {}
    t0 = int(candles.ts[0]) // NS_PER_SECOND
    return {
        "equity": equity_artifact(result.equity, t0, candles.bar_seconds),
        "trades": trades_artifact(result.trades),
    }


def _columns(art: Any, layout: tuple[tuple[str, str], ...]) -> dict[str, np.ndarray] | None:
    """Split a stored blob of ``k`` rows into its columns (``layout``: name and dtype, in stored order)."""
    if not isinstance(art, dict) or art.get("v") != FORMAT:
        return None
    raw, k, offset, out = base64.b64decode(art["data"]), int(art["k"]), 0, {}
    for name, dtype in layout:
        width = np.dtype(dtype).itemsize * k
        out[name] = np.frombuffer(raw, dtype=dtype, count=k, offset=offset).astype(
            np.float64 if "f" in dtype else np.int64
        )
        offset += width
    return out


@dataclass(frozen=True)
class EquityCurve:
    """A decoded curve: ``ts`` (epoch seconds, bar close), ``bar`` (index in the window), ``equity``; ``bars`` in all.

    ``t0``/``dt`` give any bar's open time as ``t0 + bar × dt`` (for trade markers).
    """

    ts: np.ndarray
    bar: np.ndarray
    equity: np.ndarray
    bars: int
    t0: int
    dt: int

    def drawdown(self, capital: float) -> np.ndarray:
        """Drawdown at each point as the ``max_drawdown`` metric defines it: equity / max(capital, peak so far) − 1."""
        peak = np.maximum(np.maximum.accumulate(self.equity), capital)
        return self.equity / peak - 1.0


@dataclass(frozen=True)
class TradeList:
    """Decoded trades (columns as arrays, in the order they closed) and how many round trips there were in all."""

    total: int
    entry_bar: np.ndarray
    exit_bar: np.ndarray
    entry_price: np.ndarray
    exit_price: np.ndarray
    qty: np.ndarray
    pnl: np.ndarray
    ret: np.ndarray
    reason: np.ndarray

    def __len__(self) -> int:
        return len(self.entry_bar)

    def reasons(self) -> list[str]:
        """Exit reason names, one per kept trade."""
        return [EXIT_REASONS[int(code)] for code in self.reason]


def decode_equity(extra: Mapping[str, Any]) -> EquityCurve | None:
    """The curve stored in a record's ``extra``; ``None`` if it has none (results computed before artifacts)."""
    art: Any = extra.get("equity")
    layout = EQUITY_LAYOUTS.get(art.get("iw", 0)) if isinstance(art, dict) else None
    cols = _columns(art, layout) if layout else None
    if cols is None:
        return None
    t0, dt, bar = int(art["t0"]), int(art["dt"]), np.cumsum(cols["step"])
    return EquityCurve(ts=t0 + (bar + 1) * dt, bar=bar, equity=cols["equity"], bars=int(art["n"]), t0=t0, dt=dt)


def decode_trades(extra: Mapping[str, Any]) -> TradeList | None:
    """The trades stored in a record's ``extra``; ``None`` if it has none."""
    art: Any = extra.get("trades")
    cols = _columns(art, TRADES_LAYOUT)
    if cols is None:
        return None
    return TradeList(total=int(art["n"]), **cols)
