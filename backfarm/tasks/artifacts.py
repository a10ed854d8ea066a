"""Pictures without a recompute: every result keeps a downsampled equity curve and its trade list in ``extra``.

The embedded sweep runs thousands of backtests per second and the parent process serialises every record to JSON,
so the artifacts are built and stored cheaply:

- The curve is cut to at most :data:`MAX_POINTS` points by vectorised min/max bucketing (one ``reshape``, one
  ``argmin`` and one ``argmax``): every bucket keeps its lowest and highest point, so the curve's highs and lows
  survive, and a drawdown drawn from it misses at most a peak inside the trough's own bucket.
- The rest (picks, steps, float32 conversion, packing) is one numba call per artifact: about 30 µs per result
  in all for 43,200 bars, two thirds of it numpy's SIMD ``argmin``/``argmax`` over the buckets.
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
from numba import njit

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
_NO_BARS = np.empty(0, dtype=np.int64)


def downsample_minmax(values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Sorted, unique int64 indices of at most ``max_points`` points that keep the shape of ``values``.

    The first and last points are always kept. The interior is cut into equal buckets (one ``reshape``) plus a
    shorter tail bucket, and each bucket contributes the index of its minimum and of its maximum.
    """
    if max_points < 6:
        raise ValidationError(f"max_points must be at least 6, got {max_points}")
    values = _f8(values)
    return _picks(values, *_bucket_extremes(values, max_points), max_points)


def _bucket_extremes(values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """``argmin`` and ``argmax`` within each full bucket (numpy's SIMD scans: the bulk of the work)."""
    n = len(values)
    if n <= max_points:
        return _NO_BARS, _NO_BARS
    size, full = _buckets(n, max_points)
    body = values[1 : 1 + full * size].reshape(full, size)
    return body.argmin(axis=1), body.argmax(axis=1)


@njit(cache=True)
def _buckets(n: int, max_points: int) -> tuple[int, int]:
    """Size and number of the full buckets over the ``n - 2`` interior points of a curve of ``n > max_points``."""
    inner = n - 2
    buckets = (max_points - 2) // 2 - 1  # one bucket's worth of points is reserved for the tail
    size = -(-inner // buckets)
    return size, inner // size


@njit(cache=True)
def _extremes(values: np.ndarray, start: int, stop: int) -> tuple[int, int]:
    """``argmin`` and ``argmax`` of ``values[start:stop]`` as absolute indices, with numpy's rules: the first
    occurrence wins, and a NaN is both (the first NaN)."""
    lo = hi = start
    low = high = values[start]
    if np.isnan(low):
        return start, start
    for i in range(start + 1, stop):
        v = values[i]
        if np.isnan(v):
            return i, i
        if v < low:
            low, lo = v, i
        if v > high:
            high, hi = v, i
    return lo, hi


@njit(cache=True)
def _picks(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, max_points: int) -> np.ndarray:
    """The indices :func:`downsample_minmax` keeps, given each full bucket's ``argmin``/``argmax`` (relative)."""
    n = len(values)
    if n <= max_points:
        return np.arange(n).astype(np.int64)
    size, full = _buckets(n, max_points)
    picks = np.empty(2 * full + 4, dtype=np.int64)
    picks[0] = 0
    k = 1
    for b in range(full + 1):
        base = 1 + b * size
        if b < full:
            low, high = base + lo[b], base + hi[b]
        elif base < n - 1:  # the tail bucket
            low, high = _extremes(values, base, n - 1)
        else:
            break
        # Picks arrive sorted; a flat bucket gives argmin == argmax: keep it once.
        for i in (min(low, high), max(low, high)):
            if i != picks[k - 1]:
                picks[k] = i
                k += 1
    picks[k] = n - 1
    return picks[: k + 1]


@njit(cache=True)
def _put(out: np.ndarray, at: int, value: int, width: int) -> int:
    """Write ``value`` modulo ``2**(8 × width)`` little-endian at ``out[at]``; the offset after it."""
    whole = np.int64(value)
    for j in range(width):
        out[at + j] = (whole >> (8 * j)) & 0xFF
    return at + width


@njit(cache=True)
def _put_f4(out: np.ndarray, at: int, values: np.ndarray, rows: np.ndarray) -> int:
    """Write ``values[rows]`` as little-endian float32 from ``out[at]``; the offset after them."""
    as_f4 = np.empty(len(rows), dtype=np.float32)
    for i in range(len(rows)):
        as_f4[i] = values[rows[i]]
    bits = as_f4.view(np.uint32)
    for i in range(len(rows)):
        at = _put(out, at, bits[i], 4)
    return at


@njit(cache=True)
def _pack_equity(
    equity: np.ndarray, lo: np.ndarray, hi: np.ndarray, bars: np.ndarray, numbered: bool
) -> tuple[np.ndarray, int, int]:
    """The equity blob's bytes (steps, then float32 values), its rows and its step width (2 or 4 bytes)."""
    idx = _picks(equity, lo, hi, MAX_POINTS)
    k = len(idx)
    steps = np.empty(k, dtype=np.int64)
    prev, top = 0, 0
    for i in range(k):
        bar = bars[idx[i]] if numbered else idx[i]
        steps[i] = bar - prev
        prev = bar
        top = max(top, steps[i]) if i else steps[i]
    width = 2 if k == 0 or top < 2**16 else 4  # bar steps take 2 bytes unless one reaches 65,536 bars
    out = np.empty(k * (width + 4), dtype=np.uint8)
    at = 0
    for i in range(k):
        at = _put(out, at, steps[i], width)
    _put_f4(out, at, equity, idx)
    return out, k, width


@njit(cache=True)
def _top_trades(pnl: np.ndarray, max_trades: int) -> np.ndarray:
    """Rows of the ``max_trades`` largest absolute P&Ls in closing order, or an empty array when the choice is not
    unique (a tie across the cut, or a NaN): then ``argpartition`` decides, as it always has."""
    size = np.abs(pnl)
    cut = np.sort(size)[len(size) - max_trades]
    above = equal = 0
    for v in size:
        if np.isnan(v):
            return np.empty(0, dtype=np.int64)
        above += v > cut
        equal += v == cut
    if above + equal != max_trades:
        return np.empty(0, dtype=np.int64)
    return np.nonzero(size >= cut)[0].astype(np.int64)


@njit(cache=True)
def _pack_trades(
    entry_bar: np.ndarray,
    exit_bar: np.ndarray,
    entry_price: np.ndarray,
    exit_price: np.ndarray,
    qty: np.ndarray,
    pnl: np.ndarray,
    ret: np.ndarray,
    reason: np.ndarray,
    keep: np.ndarray,
    max_trades: int,
) -> tuple[np.ndarray, int]:
    """The trades blob's bytes and rows: entry and exit bars as uint32, the floats (the columns of
    :data:`TRADE_FLOATS`) as float32, the reason byte; of rows ``keep``, or when it is empty, of every trade or the
    ``max_trades`` largest. Rows ``-1`` (no bytes) when that choice is not unique (see :func:`_top_trades`)."""
    n = len(pnl)
    if len(keep) == 0:
        keep = np.arange(n).astype(np.int64) if n <= max_trades else _top_trades(pnl, max_trades)
        if len(keep) == 0 and n > 0:
            return np.empty(0, dtype=np.uint8), -1
    k = len(keep)
    out = np.empty(k * 29, dtype=np.uint8)
    at = 0
    for i in range(k):
        at = _put(out, at, entry_bar[keep[i]], 4)
    for i in range(k):
        at = _put(out, at, exit_bar[keep[i]], 4)
    # One call per column, not a loop over a tuple: the columns may differ in layout (numba needs one type).
    at = _put_f4(out, at, entry_price, keep)
    at = _put_f4(out, at, exit_price, keep)
    at = _put_f4(out, at, qty, keep)
    at = _put_f4(out, at, pnl, keep)
    at = _put_f4(out, at, ret, keep)
    for i in range(k):
        at = _put(out, at, reason[keep[i]], 1)
    return out, k


def _f8(values: np.ndarray) -> np.ndarray:
    """``values`` as contiguous float64, without a copy when they already are."""
    return (
        values if values.dtype == np.float64 and values.flags.c_contiguous else np.ascontiguousarray(values, np.float64)
    )


def _i8(values: np.ndarray) -> np.ndarray:
    """``values`` as int64, without a copy when they already are."""
    return values if values.dtype == np.int64 else np.asarray(values).astype(np.int64)


def equity_artifact(equity: np.ndarray, t0: int, dt: int, bars: np.ndarray | None = None) -> dict[str, Any]:
    """The stored form of an equity curve whose bar 0 opens at ``t0`` (epoch seconds), ``dt`` seconds per bar.

    ``bars`` numbers the values when they are not simply bars 0, 1, 2, ... (a live session that missed some).
    """
    equity = _f8(equity)
    numbered = bars is not None
    lo, hi = _bucket_extremes(equity, MAX_POINTS)
    data, k, width = _pack_equity(equity, lo, hi, _i8(bars) if bars is not None else _NO_BARS, numbered)
    return {
        "v": FORMAT,
        "n": len(equity) if bars is None else int(bars[-1]) + 1,
        "t0": t0,
        "dt": dt,
        "k": k,
        "iw": width,
        "data": base64.b64encode(data.data).decode("ascii"),
    }


def trades_artifact(trades: Trades, max_trades: int = MAX_TRADES) -> dict[str, Any]:
    """The stored form of a trade list: every round trip, or the ``max_trades`` with the largest absolute P&L."""
    t = trades

    def pack(keep: np.ndarray) -> tuple[np.ndarray, int]:
        # The columns go as they are (Trades.from_table gives int64 and strided float64 ones): converting or
        # stacking them first would cost more numpy calls than the whole packing.
        return _pack_trades(
            t.entry_bar, t.exit_bar, t.entry_price, t.exit_price, t.qty, t.pnl, t.ret, t.exit_reason, keep, max_trades
        )

    data, k = pack(_NO_BARS)
    if k < 0:  # a tie across the cut (or a NaN): argpartition picks, as it always has
        data, k = pack(np.sort(np.argpartition(-np.abs(t.pnl), max_trades - 1)[:max_trades]).astype(np.int64))
    return {"v": FORMAT, "n": len(trades), "k": k, "data": base64.b64encode(data.data).decode("ascii")}


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
