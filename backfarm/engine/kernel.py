"""The compiled backtest kernel: one pass over the bars does every fill and accumulates every metric online.

The fill model it implements is specified in :mod:`backfarm.engine.backtest`. The kernel allocates nothing: the
caller owns a fixed-size state vector ``acc`` (slots below), an ``equity`` array (length n when recording, else 0)
and a ``trades`` table (one row per possible round trip when recording, else 0 rows). Metrics are finished from
``acc`` by :func:`backfarm.engine.metrics.metrics_from_accumulators`.

Per-bar work is a handful of flops; fills, stop checks and round-trip bookkeeping live in small helpers that run only
on the bars where something happens. Everything is plain IEEE arithmetic (no fastmath), so results are exact and
deterministic for given inputs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

SIGNAL = 0
STOP = 1
TARGET = 2
END = 3
EXIT_REASONS: tuple[str, ...] = ("signal", "stop", "target", "end")
"""Exit reason names, indexed by the codes above."""

# Slots of the state/accumulator vector ``acc``. The first group is live state, the second the running round trip,
# the third the accumulators the metrics are finished from.
CASH = 0
QTY = 1
AVG_ENTRY = 2
T_COST = 3
T_PROCEEDS = 4
T_ENTRY_BAR = 5
T_BUY_QTY = 6
T_BUY_NOTIONAL = 7
T_SELL_QTY = 8
T_SELL_NOTIONAL = 9
FINAL_EQUITY = 10
SUM_R = 11
SUM_R2 = 12
SUM_NEG_R2 = 13
NEG_BARS = 14
MAX_DRAWDOWN = 15
HELD_BARS = 16
NOTIONAL = 17
FEES = 18
TRADES = 19
WINS = 20
LOSSES = 21
GROSS_WIN = 22
GROSS_LOSS = 23
SUM_TRADE_RET = 24
BAD_BAR = 25
N_SLOTS = 26

TRADE_COLUMNS: tuple[str, ...] = ("entry_bar", "exit_bar", "entry_price", "exit_price", "qty", "pnl", "ret", "exit_reason")
"""Columns of the ``trades`` table the kernel fills when recording."""


@njit(cache=True)
def _clean_target(x: float) -> float:
    """NaN (and anything not above 0) → 0, above 1 → 1."""
    if not x > 0.0:
        return 0.0
    if x > 1.0:
        return 1.0
    return x


@njit(cache=True)
def _valid_bar(o: float, h: float, lo: float, c: float) -> bool:
    """All four prices positive and finite (NaN fails the comparisons)."""
    return 0.0 < o < np.inf and 0.0 < h < np.inf and 0.0 < lo < np.inf and 0.0 < c < np.inf


@njit(cache=True)
def _buy(acc: np.ndarray, spend: float, price: float, fee: float, bar: int) -> None:
    """Spend ``spend`` cash, fee included, at fill price ``price``; opens a round trip when flat."""
    qty = spend / (price * (1.0 + fee))
    notional = qty * price
    if acc[QTY] == 0.0:
        acc[T_COST] = 0.0
        acc[T_PROCEEDS] = 0.0
        acc[T_ENTRY_BAR] = bar
        acc[T_BUY_QTY] = 0.0
        acc[T_BUY_NOTIONAL] = 0.0
        acc[T_SELL_QTY] = 0.0
        acc[T_SELL_NOTIONAL] = 0.0
        acc[AVG_ENTRY] = price
    else:
        acc[AVG_ENTRY] = (acc[QTY] * acc[AVG_ENTRY] + notional) / (acc[QTY] + qty)
    acc[QTY] += qty
    acc[CASH] -= spend  # exactly ``spend``, so a buy of all the cash leaves exactly 0
    acc[T_COST] += spend
    acc[T_BUY_QTY] += qty
    acc[T_BUY_NOTIONAL] += notional
    acc[NOTIONAL] += notional
    acc[FEES] += notional * fee


@njit(cache=True)
def _close_round_trip(acc: np.ndarray, bar: int, reason: int, trades: np.ndarray, record: bool) -> None:
    """Book the round trip that just went flat: counts, pnl sums and (when recording) its row."""
    pnl = acc[T_PROCEEDS] - acc[T_COST]
    ret = pnl / acc[T_COST]
    if record:
        row = int(acc[TRADES])
        trades[row, 0] = acc[T_ENTRY_BAR]
        trades[row, 1] = bar
        trades[row, 2] = acc[T_BUY_NOTIONAL] / acc[T_BUY_QTY]
        trades[row, 3] = acc[T_SELL_NOTIONAL] / acc[T_SELL_QTY]
        trades[row, 4] = acc[T_BUY_QTY]
        trades[row, 5] = pnl
        trades[row, 6] = ret
        trades[row, 7] = reason
    acc[TRADES] += 1.0
    acc[SUM_TRADE_RET] += ret
    if pnl > 0.0:
        acc[WINS] += 1.0
        acc[GROSS_WIN] += pnl
    elif pnl < 0.0:
        acc[LOSSES] += 1.0
        acc[GROSS_LOSS] += pnl


@njit(cache=True)
def _sell(
    acc: np.ndarray, qty: float, price: float, fee: float, bar: int, reason: int, trades: np.ndarray, record: bool
) -> None:
    """Sell ``qty`` at fill price ``price``, paying the fee; selling the whole position closes the round trip."""
    notional = qty * price
    fee_paid = notional * fee
    acc[CASH] += notional - fee_paid
    acc[T_PROCEEDS] += notional - fee_paid
    acc[T_SELL_QTY] += qty
    acc[T_SELL_NOTIONAL] += notional
    acc[NOTIONAL] += notional
    acc[FEES] += fee_paid
    if qty >= acc[QTY]:
        acc[QTY] = 0.0
        _close_round_trip(acc, bar, reason, trades, record)
    else:
        acc[QTY] -= qty


@njit(cache=True)
def _rebalance(
    acc: np.ndarray,
    x: float,
    o: float,
    markup: float,
    markdown: float,
    fee: float,
    bar: int,
    trades: np.ndarray,
    record: bool,
) -> None:
    """Trade at the open ``o`` so the position is worth ``x`` × equity (marked at ``o``)."""
    held = acc[QTY]
    if x == 0.0:
        if held > 0.0:
            _sell(acc, held, o * (1.0 - markdown), fee, bar, SIGNAL, trades, record)
        return
    current = held * o
    target = x * (acc[CASH] + current)
    if target > current:
        spend = min(target - current, acc[CASH])
        if spend > 0.0:
            _buy(acc, spend, o * (1.0 + markup), fee, bar)
    elif target < current:
        _sell(acc, min((current - target) / o, held), o * (1.0 - markdown), fee, bar, SIGNAL, trades, record)


@njit(cache=True)
def _check_exits(
    acc: np.ndarray,
    o: float,
    h: float,
    lo: float,
    stop_frac: float,
    target_frac: float,
    markdown: float,
    fee: float,
    bar: int,
    trades: np.ndarray,
    record: bool,
) -> None:
    """Stop-loss / take-profit inside one bar: gaps fill at the open, and the stop wins when both are touched."""
    stop = acc[AVG_ENTRY] * (1.0 - stop_frac) if stop_frac > 0.0 else -1.0
    target = acc[AVG_ENTRY] * (1.0 + target_frac) if target_frac > 0.0 else np.inf
    if o <= stop:
        level, reason = o, STOP
    elif o >= target:
        level, reason = o, TARGET
    elif lo <= stop:
        level, reason = stop, STOP
    elif h >= target:
        level, reason = target, TARGET
    else:
        return
    _sell(acc, acc[QTY], level * (1.0 - markdown), fee, bar, reason, trades, record)


@njit(cache=True)
def simulate(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    exposure: np.ndarray,
    markup: float,
    markdown: float,
    fee: float,
    stop_frac: float,
    target_frac: float,
    capital: float,
    acc: np.ndarray,
    equity: np.ndarray,
    trades: np.ndarray,
    record: bool,
) -> None:
    """Run the fill model over all bars, filling ``acc`` (and ``equity``/``trades`` when ``record``).

    ``stop_frac``/``target_frac`` are fractions of the average entry price, 0 meaning "no such exit". On a bar with
    an invalid price the run stops and ``acc[BAD_BAR]`` holds its index (else -1).
    """
    n = close.shape[0]
    acc[:] = 0.0
    acc[CASH] = capital
    acc[BAD_BAR] = -1.0
    exits = stop_frac > 0.0 or target_frac > 0.0
    prev_x = 0.0
    pending = False
    e_prev = capital
    peak = capital
    max_dd = 0.0
    sum_r = 0.0
    sum_r2 = 0.0
    sum_neg_r2 = 0.0
    neg_bars = 0
    held_bars = 0
    for t in range(n):
        o = open_[t]
        c = close[t]
        if not _valid_bar(o, high[t], low[t], c):
            acc[BAD_BAR] = t
            return
        if pending:
            _rebalance(acc, prev_x, o, markup, markdown, fee, t, trades, record)
            pending = False
        if exits and acc[QTY] > 0.0:
            _check_exits(acc, o, high[t], low[t], stop_frac, target_frac, markdown, fee, t, trades, record)
        if acc[QTY] > 0.0:
            held_bars += 1
            if t == n - 1:
                _sell(acc, acc[QTY], c * (1.0 - markdown), fee, t, END, trades, record)
        e = acc[CASH] + acc[QTY] * c
        if record:
            equity[t] = e
        r = e / e_prev - 1.0
        e_prev = e
        sum_r += r
        sum_r2 += r * r
        if r < 0.0:
            sum_neg_r2 += r * r
            neg_bars += 1
        if e > peak:
            peak = e
        elif e / peak - 1.0 < max_dd:
            max_dd = e / peak - 1.0
        x = _clean_target(exposure[t])
        if x != prev_x:
            pending = True
            prev_x = x
    acc[FINAL_EQUITY] = e_prev
    acc[SUM_R] = sum_r
    acc[SUM_R2] = sum_r2
    acc[SUM_NEG_R2] = sum_neg_r2
    acc[NEG_BARS] = neg_bars
    acc[MAX_DRAWDOWN] = max_dd
    acc[HELD_BARS] = held_bars
