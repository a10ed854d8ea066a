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

from backfarm._util.time import NS_PER_SECOND
from backfarm.core.candles import Candles
from backfarm.engine import kernel
from backfarm.engine.backtest import BacktestResult, Trades
from backfarm.engine.downsample import MAX_POINTS, bucket_extremes, picks

FORMAT = 1
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
if kernel.TRADE_COLUMNS != ("entry_bar", "exit_bar", "entry_price", "exit_price", "qty", "pnl", "ret", "exit_reason"):
    raise ImportError("the engine's trade table changed its columns: update _pack_table")  # pragma: no cover


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
def _pack_points(bars: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The equity blob's bytes of the points at ``bars`` (ascending) with equity ``values``: the bar steps, then
    the values as float32; its rows and its step width (2 or 4 bytes)."""
    k = len(bars)
    steps = np.empty(k, dtype=np.int64)
    prev, top = 0, 0
    for i in range(k):
        steps[i] = bars[i] - prev
        prev = bars[i]
        top = max(top, steps[i]) if i else steps[i]
    width = 2 if k == 0 or top < 2**16 else 4  # bar steps take 2 bytes unless one reaches 65,536 bars
    out = np.empty(k * (width + 4), dtype=np.uint8)
    at = 0
    for i in range(k):
        at = _put(out, at, steps[i], width)
    _put_f4(out, at, values, np.arange(k))
    return out, k, width


@njit(cache=True)
def _pack_equity(
    equity: np.ndarray, lo: np.ndarray, hi: np.ndarray, bars: np.ndarray, numbered: bool
) -> tuple[np.ndarray, int, int]:
    """:func:`_pack_points` of the points :func:`backfarm.engine.downsample.downsample_minmax` keeps of a full curve."""
    idx = picks(equity, lo, hi, MAX_POINTS)
    return _pack_points(bars[idx] if numbered else idx, equity[idx])


@njit(cache=True)
def _top_trades(pnl: np.ndarray, max_trades: int) -> np.ndarray:
    """Rows of the ``max_trades`` largest absolute P&Ls in closing order, or an empty array when the choice is not
    unique (a tie across the cut, or a NaN): then ``argpartition`` decides, as it always has."""
    size = np.abs(pnl)
    cut = np.partition(size, len(size) - max_trades)[len(size) - max_trades]  # the cut value, in O(n)
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


@njit(cache=True)
def _pack_table(table: np.ndarray, keep: np.ndarray, max_trades: int) -> tuple[np.ndarray, int]:
    """:func:`_pack_trades` of the engine's trade table (columns ``kernel.TRADE_COLUMNS``, in that order)."""
    return _pack_trades(
        table[:, 0], table[:, 1], table[:, 2], table[:, 3], table[:, 4], table[:, 5], table[:, 6], table[:, 7],
        keep, max_trades,
    )  # fmt: skip


def _f8(values: np.ndarray) -> np.ndarray:
    """``values`` as contiguous float64, without a copy when they already are."""
    return (
        values if values.dtype == np.float64 and values.flags.c_contiguous else np.ascontiguousarray(values, np.float64)
    )


def _i8(values: np.ndarray) -> np.ndarray:
    """``values`` as int64, without a copy when they already are."""
    return values if values.dtype == np.int64 else np.asarray(values).astype(np.int64)


def equity_artifact(
    equity: np.ndarray, t0: int, dt: int, bars: np.ndarray | None = None, raw: bool = False
) -> dict[str, Any]:
    """The stored form of an equity curve whose bar 0 opens at ``t0`` (epoch seconds), ``dt`` seconds per bar.

    ``bars`` numbers the values when they are not simply bars 0, 1, 2, ... (a live session that missed some).
    ``raw``: ``data`` as bytes (for columnar storage) instead of base64 text (for JSON).
    """
    equity = _f8(equity)
    numbered = bars is not None
    lo, hi = bucket_extremes(equity, MAX_POINTS)
    packed = _pack_equity(equity, lo, hi, _i8(bars) if bars is not None else _NO_BARS, numbered)
    return _equity_dict(packed, len(equity) if bars is None else int(bars[-1]) + 1, t0, dt, raw)


def points_artifact(
    bars: np.ndarray, values: np.ndarray, n: int, t0: int, dt: int, raw: bool = False
) -> dict[str, Any]:
    """:func:`equity_artifact` of a curve of ``n`` bars already cut to its kept points (``BacktestResult.curve``)."""
    return _equity_dict(_pack_points(_i8(bars), _f8(values)), n, t0, dt, raw)


def _equity_dict(packed: tuple[np.ndarray, int, int], n: int, t0: int, dt: int, raw: bool) -> dict[str, Any]:
    data, k, width = packed
    return {"v": FORMAT, "n": n, "t0": t0, "dt": dt, "k": k, "iw": width, "data": _data(data, raw)}


def _data(packed: np.ndarray, raw: bool) -> bytes | str:
    """An artifact's bytes, or their base64 text (what JSON carries)."""
    return packed.tobytes() if raw else base64.b64encode(packed.data).decode("ascii")


def artifacts(result: BacktestResult, candles: Candles, raw: bool = False) -> dict[str, Any]:
    """``extra`` for a recorded backtest (``run_backtest(..., record=True)``, with ``curve_points=MAX_POINTS`` for
    the cheaper curve); ``{}`` when nothing was recorded. ``raw``: the data as bytes, not base64 text."""
    if result.trade_table is None:
        return {}
    t0 = int(candles.ts[0]) // NS_PER_SECOND
    if result.curve is not None:
        equity = points_artifact(*result.curve, len(candles), t0, candles.bar_seconds, raw)
    elif result.equity is not None:
        equity = equity_artifact(result.equity, t0, candles.bar_seconds, raw=raw)
    else:
        return {}
    return {"equity": equity, "trades": table_artifact(result.trade_table, raw=raw)}


def table_artifact(table: np.ndarray, max_trades: int = MAX_TRADES, raw: bool = False) -> dict[str, Any]:
    """The stored form of the engine's trade table (``BacktestResult.trade_table``), read in place: every round
    trip, or the ``max_trades`` with the largest absolute P&L. ``raw``: the data as bytes, not base64 text."""
    table = np.ascontiguousarray(table, dtype=np.float64)  # the packer converts bars and codes back exactly
    data, k = _pack_table(table, _NO_BARS, max_trades)
    if k < 0:  # a tie across the cut (or a NaN): argpartition picks
        pnl = table[:, kernel.TRADE_COLUMNS.index("pnl")]
        keep = np.sort(np.argpartition(-np.abs(pnl), max_trades - 1)[:max_trades]).astype(np.int64)
        data, k = _pack_table(table, keep, max_trades)
    return {"v": FORMAT, "n": len(table), "k": k, "data": _data(data, raw)}


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
