"""The compiled backtest kernel: one pass over the bars does every fill and accumulates every metric online.

The fill model it implements is specified in :mod:`backfarm.engine.backtest`. The kernel allocates nothing: the
caller owns a fixed-size state vector ``acc`` (slots below), an ``equity`` array (length n when recording, else 0),
a ``trades`` table (one row per possible round trip when recording, else 0 rows) and a ``curve`` table (the
extremes of each bucket of a downsampled equity curve, see :func:`curve_buckets`; 0 rows when not kept). Metrics
are finished from ``acc`` by :func:`backfarm.engine.metrics.metrics_from_accumulators`.

The pass is event-driven so that a 43,200-bar window costs about a tenth of a millisecond: stretches spent flat only
scan the targets (nothing else can change there), stretches spent holding run a tight loop (:func:`_hold`), and
fills, exits, changes of target and the last bar take the general path. Everything is plain IEEE arithmetic (no
fastmath), so results are exact and deterministic for given inputs, and the same whichever path a bar takes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, uint64

SIGNAL = 0
STOP = 1
TARGET = 2
END = 3
EXIT_REASONS: tuple[str, ...] = ("signal", "stop", "target", "end")
"""Exit reason names, indexed by the codes above."""
Stats = tuple[float, float, float, float, float, float, float, float, float]
"""The running equity statistics (:func:`_stats_start` gives the layout); numba passes them as a flat tuple."""

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
MAX_DRAWDOWN = 14
HELD_BARS = 15
NOTIONAL = 16
FEES = 17
TRADES = 18
WINS = 19
LOSSES = 20
GROSS_WIN = 21
GROSS_LOSS = 22
SUM_TRADE_RET = 23
BAD_BAR = 24
SUM_R3 = 25
SUM_R4 = 26
N_SLOTS = 27

_DD_SLACK = 1e-12
"""Headroom of the drawdown pre-check (in drawdown units), far above the few ulps of rounding it must absorb."""

_SCAN_BLOCK = 64
"""Bars compared at once when scanning the targets for the next change."""

TRADE_COLUMNS: tuple[str, ...] = (
    "entry_bar",
    "exit_bar",
    "entry_price",
    "exit_price",
    "qty",
    "pnl",
    "ret",
    "exit_reason",
)
"""Columns of the ``trades`` table the kernel fills when recording."""


@njit(cache=True)
def _clean_target(x: float) -> float:
    """NaN (and anything not above 0) → 0, above 1 → 1."""
    if not x > 0.0:
        return 0.0
    if x > 1.0:
        return 1.0
    return x


@njit(cache=True, inline="always")
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


@njit(cache=True, inline="always")
def _close_round_trip(acc: np.ndarray, bar: int, reason: int, trades: np.ndarray, record: bool) -> None:
    """Book the round trip that just went flat: counts, pnl sums and (when recording) its row."""
    pnl = acc[T_PROCEEDS] - acc[T_COST]
    ret = pnl / acc[T_COST]
    row = int(acc[TRADES])
    if record and row < trades.shape[0]:  # the caller sizes the table; the guard keeps a wrong size from corrupting
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


@njit(cache=True, inline="always")
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


@njit(cache=True, inline="always")
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


@njit(cache=True, inline="always")
def _exit_levels(acc: np.ndarray, stop_frac: float, target_frac: float) -> tuple[float, float]:
    """Stop and target prices of the current position; -1 / +inf when that exit is off (prices are > 0)."""
    stop = acc[AVG_ENTRY] * (1.0 - stop_frac) if stop_frac > 0.0 else -1.0
    target = acc[AVG_ENTRY] * (1.0 + target_frac) if target_frac > 0.0 else np.inf
    return stop, target


@njit(cache=True, inline="always")
def _exit(
    acc: np.ndarray,
    o: float,
    lo: float,
    stop: float,
    target: float,
    markdown: float,
    fee: float,
    bar: int,
    trades: np.ndarray,
    record: bool,
) -> None:
    """Sell everything at a touched stop/target: gaps fill at the open, and the stop wins when both are touched.

    Called only when the bar's open/low reached ``stop`` or its open/high reached ``target``.
    """
    if o <= stop:
        level, reason = o, STOP
    elif o >= target:
        level, reason = o, TARGET
    elif lo <= stop:
        level, reason = stop, STOP
    else:
        level, reason = target, TARGET
    _sell(acc, acc[QTY], level * (1.0 - markdown), fee, bar, reason, trades, record)


@njit(cache=True)
def _bad(p: float) -> bool:
    """A price that is missing (NaN), not positive, or infinite."""
    return not 0.0 < p < np.inf


@njit(cache=True)
def _mark(st: Stats, e: float) -> tuple[Any, ...]:
    """Fold the equity ``e`` of the next bar into the running statistics ``st`` (layout: ``_stats_start``).

    An unchanged equity has r = 0 and leaves the drawdown as it was, so it changes nothing. ``dd_floor`` sits just
    above the equity that would deepen the maximum drawdown, so the exact division runs only near one.
    """
    e_prev, peak, max_dd, dd_floor, sum_r, sum_r2, sum_neg_r2, sum_r3, sum_r4 = st
    if e == e_prev:
        return st
    r = e / e_prev - 1.0
    r2 = r * r
    sum_r += r
    sum_r2 += r2
    sum_r3 += r2 * r
    sum_r4 += r2 * r2
    if r < 0.0:
        sum_neg_r2 += r * r
    if e > peak:
        peak = e
        dd_floor = peak * (1.0 + (max_dd + _DD_SLACK))
    elif e < dd_floor and e / peak - 1.0 < max_dd:
        max_dd = e / peak - 1.0
        dd_floor = peak * (1.0 + (max_dd + _DD_SLACK))
    return (e, peak, max_dd, dd_floor, sum_r, sum_r2, sum_neg_r2, sum_r3, sum_r4)


@njit(cache=True)
def _stats_start(capital: float) -> Stats:
    """(previous equity, peak, max drawdown, drawdown floor, Σr, Σr², Σ(r<0)², Σr³, Σr⁴) before bar 0. (Whether
    any r is negative is Σ(r<0)² > 0: a negative r too small to square to a positive number leaves Sortino's
    denominator 0 either way, and so the metric undefined.)"""
    return (capital, capital, 0.0, capital * (1.0 + _DD_SLACK), 0.0, 0.0, 0.0, 0.0, 0.0)


@njit(cache=True)
def curve_buckets(n: int, max_points: int) -> tuple[int, int]:
    """Size and number of the full buckets of a curve of ``n > max_points`` points cut for display.

    Bars 0 and n-1 are kept as they are; the interior bars 1..n-2 are cut into full buckets of ``size`` bars from
    bar 1, plus a shorter tail bucket (possibly empty) up to bar n-2, and each bucket keeps its first minimum and
    first maximum: at most ``max_points`` points in all.
    """
    inner = n - 2
    buckets = (max_points - 2) // 2 - 1  # one bucket's worth of points is reserved for the tail
    size = -(-inner // buckets)
    return size, inner // size


CURVE_LOW, CURVE_LOW_BAR, CURVE_HIGH, CURVE_HIGH_BAR = 0, 1, 2, 3
"""Columns of the ``curve`` table: a bucket's lowest equity and its first bar, its highest and its first bar."""


@njit(cache=True, inline="always")
def _keep(curve: np.ndarray, size: int, n: int, t: int, e: float) -> None:
    """Fold bar ``t``'s equity ``e`` into its bucket of ``curve`` (when one is kept). Bars arrive in order and only
    a strictly lower (higher) value replaces the bucket's extreme, so each keeps its first occurrence, as
    ``argmin``/``argmax`` do."""
    if size > 0 and 0 < t < n - 1:
        b = (t - 1) // size
        if e < curve[b, CURVE_LOW]:
            curve[b, CURVE_LOW] = e
            curve[b, CURVE_LOW_BAR] = t
        if e > curve[b, CURVE_HIGH]:
            curve[b, CURVE_HIGH] = e
            curve[b, CURVE_HIGH_BAR] = t


@njit(cache=True)
def _keep_flat(curve: np.ndarray, size: int, n: int, start: int, stop: int, e: float) -> None:
    """:func:`_keep` for bars start..stop-1 that all have equity ``e``: only each bucket's first bar can count."""
    if size == 0:
        return
    t = max(start, 1)
    while t < min(stop, n - 1):
        _keep(curve, size, n, t, e)
        t = 1 + ((t - 1) // size + 1) * size  # the first bar of the next bucket


@njit(cache=True)
def _next_change(exposure: np.ndarray, start: int, prev_x: float) -> int:
    """First bar >= ``start`` whose cleaned target differs from ``prev_x``, or n. Raw equality skips the cleaning.

    Whole blocks equal to the last raw value are skipped with a branch-free comparison that compiles to SIMD; only
    a block holding some other value is walked bar by bar.
    """
    n = exposure.shape[0]
    raw = prev_x
    s = start
    while s < n:
        stop = min(s + _SCAN_BLOCK, n)
        if stop - s == _SCAN_BLOCK:
            # An int OR-reduction over unsigned indices: LLVM turns it into SIMD compares. (A boolean AND, or a
            # signed index that might wrap around, keeps it scalar: about six times slower.)
            differ = 0
            base = uint64(s)
            for k in range(_SCAN_BLOCK):
                differ |= exposure[base + uint64(k)] != raw
            if not differ:
                s = stop
                continue
        for i in range(s, stop):
            value = exposure[i]
            if value != raw:
                if _clean_target(value) != prev_x:
                    return i
                raw = value
        s = stop
    return n  # type: ignore[no-any-return]  # a shape is an int; numpy says Any


@njit(cache=True)
def _hold_careful(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    exposure: np.ndarray,
    t: int,
    cash: float,
    qty: float,
    stop: float,
    target: float,
    prev_x: float,
    st: Stats,
    equity: np.ndarray,
    record: bool,
    curve: np.ndarray,
    size: int,
) -> tuple[Any, ...]:
    """:func:`_hold` bar by bar, checking every price as it goes: the reference the fast path must equal, and its
    fallback when a stretch holds a bad close."""
    n = close.shape[0]
    exits = stop > 0.0 or target < np.inf
    held = 0
    while t < n - 1:
        c = close[t]
        if _bad(c):
            break
        if exits:
            o, h, lo = open_[t], high[t], low[t]
            if _bad(o) or _bad(h) or _bad(lo) or min(o, lo) <= stop or max(o, h) >= target:
                break
        e = cash + qty * c
        if record:
            equity[t] = e
        _keep(curve, size, n, t, e)
        st = _mark(st, e)
        held += 1
        t += 1
        if _clean_target(exposure[t - 1]) != prev_x:
            return t, st, held, True
    return t, st, held, False


@njit(cache=True)
def _first_exit(
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, start: int, end: int, stop: float, target: float
) -> int:
    """First bar in [start, end) whose open/low reaches ``stop``, whose open/high reaches ``target``, or with a bad
    open/high/low; ``end`` if none.

    Blocks where no bar can qualify are skipped with a branch-free test that compiles to SIMD (as in
    :func:`_next_change`); a block that might hold one is walked bar by bar with the exact test.
    """
    floor = max(stop, 0.0)  # at or below it: a touched stop, or a non-positive (bad) price
    u = max(start, 0)
    while u < end:
        stop_at = min(u + _SCAN_BLOCK, end)
        if stop_at - u == _SCAN_BLOCK:
            # One OR of plain comparisons (no AND-accumulation, which stays scalar): every bar the exact test below
            # would stop at sets it (NaN ≠ itself; +inf reaches any target), some harmless others may too.
            flagged = 0
            base = uint64(u)
            for k in range(_SCAN_BLOCK):
                i = base + uint64(k)
                o, h, lo = open_[i], high[i], low[i]
                flagged |= (o <= floor) | (lo <= floor) | (h <= 0.0) | (o >= target) | (h >= target)
                flagged |= (lo == np.inf) | (o != o) | (h != h) | (lo != lo)
            if not flagged:
                u = stop_at
                continue
        for v in range(u, stop_at):
            o, h, lo = open_[v], high[v], low[v]
            if _bad(o) or _bad(h) or _bad(lo) or min(o, lo) <= stop or max(o, h) >= target:
                return v
        u = stop_at
    return end


@njit(cache=True, error_model="numpy")  # a zero close (rejected below) must give inf, not raise mid-loop
def _mark_run(
    close: np.ndarray,
    start: int,
    end: int,
    cash: float,
    qty: float,
    st: Stats,
    equity: np.ndarray,
    record: bool,
    curve: np.ndarray,
    size: int,
) -> tuple[Any, ...]:
    """Fold the held bars start..end-1 (equity = cash + qty × close) into ``st``, as :func:`_mark` bar by bar.

    Returns (all closes valid, statistics); with an invalid close the statistics are meaningless (and a false alarm
    from an overflow only costs the caller a careful rerun). The loop has a fixed trip count and no early exit, so
    it pipelines, and nothing in it branches on the coin flip of a return's sign or of a new peak: ``min``/``max``
    compile to branch-free instructions, where an ``if``/``else`` (even a conditional expression) stays a branch
    that a random walk mispredicts about every other bar (4× slower: 11 ns a bar instead of 2.6 on the benchmark
    machine). Adding an exact 0.0 leaves a sum bit-identical (the sums are never -0.0), and an unchanged equity
    needs no special case: its r is exactly +0.0, which changes no sum and no drawdown state. The drawdown floor
    is recomputed every bar from (peak, max_dd) with the same formula, so it equals the value :func:`_mark` keeps;
    only the rare bar below it (a new maximum drawdown, or close to one) takes the branch with the division.

    When a ``curve`` is kept the run is cut at its bucket boundaries, and each piece's first minimum and maximum
    are folded into their bucket (new extremes within a bucket are rare, so those branches are well predicted).
    """
    e_prev, peak, max_dd, dd_floor, sum_r, sum_r2, sum_neg_r2, sum_r3, sum_r4 = st
    n = close.shape[0]
    lowest = np.inf
    piece = start
    while piece < end:
        stop = end if size == 0 else min(end, 1 + ((piece - 1) // size + 1) * size)  # runs never hold bar 0
        low, low_bar, high, high_bar = np.inf, uint64(piece), -np.inf, uint64(piece)
        for u in range(uint64(piece), uint64(stop)):  # unsigned: no wrap-around check on every index
            c = close[u]
            lowest = min(c, lowest)
            e = cash + qty * c
            if record:
                equity[u] = e
            if size > 0:
                if e < low:
                    low, low_bar = e, u  # type: ignore[assignment]  # numba types the bar as unsigned
                if e > high:
                    high, high_bar = e, u  # type: ignore[assignment]  # numba types the bar as unsigned
            r = e / e_prev - 1.0
            r2 = r * r
            sum_r += r
            sum_r2 += r2
            sum_r3 += r2 * r
            sum_r4 += r2 * r2
            down = min(r, 0.0)  # r when negative, else exactly 0.0: its square adds r² or nothing
            sum_neg_r2 += down * down
            peak = max(peak, e)
            dd_floor = peak * (1.0 + (max_dd + _DD_SLACK))
            if e < dd_floor:
                dd = e / peak - 1.0
                if dd < max_dd:
                    max_dd = dd
                    dd_floor = peak * (1.0 + (max_dd + _DD_SLACK))
            e_prev = e
        if size > 0:
            _keep(curve, size, n, int(low_bar), low)
            _keep(curve, size, n, int(high_bar), high)
        piece = stop
    # A NaN or infinite close makes the sum of returns non-finite; a non-positive one shows in ``lowest``. Checking
    # once here keeps the per-bar loop free of exits.
    ok = lowest > 0.0 and math.isfinite(sum_r)
    return ok, (e_prev, peak, max_dd, dd_floor, sum_r, sum_r2, sum_neg_r2, sum_r3, sum_r4)


@njit(cache=True, inline="always")
def _hold(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    exposure: np.ndarray,
    t: int,
    cash: float,
    qty: float,
    stop: float,
    target: float,
    prev_x: float,
    st: Stats,
    equity: np.ndarray,
    record: bool,
    curve: np.ndarray,
    size: int,
) -> tuple[Any, ...]:
    """The hot path: bars from ``t`` on, held, with no fill, no exit and no change of target; n−1 is left out.

    Stops before a bar that needs the general path (an exit touched, a bad price, the last bar) and after a bar
    whose target changes. Returns (next bar, statistics, bars held, target changed). The stretch is found first
    (the next change of target, then the first exit touched), then marked in one fixed-length loop.
    """
    n = close.shape[0]
    change = _next_change(exposure, t, prev_x)
    end = min(change + 1, n - 1)
    if stop > 0.0 or target < np.inf:
        end = _first_exit(open_, high, low, t, end, stop, target)
    if end <= t:
        return t, st, 0, False
    ok, marked = _mark_run(close, t, end, cash, qty, st, equity, record, curve, size)
    if not ok:
        # A bad close: the careful rerun stops before it and the caller fails the backtest there, so what the run
        # above folded into ``curve`` is thrown away. With valid closes (an overflow's false alarm) it folded the
        # same equities the rerun folds, and folding them again changes nothing.
        return _hold_careful(
            open_, high, low, close, exposure, t, cash, qty, stop, target, prev_x, st, equity, record, curve, size
        )
    return end, marked, end - t, end == change + 1


@njit(cache=True, inline="always")
def _block_ends(
    blocks: np.ndarray,
    mark: int,
    block: int,
    mstep: int,
    last_block: int,
    stop: int,
    cash: float,
    qty: float,
    close: np.ndarray,
) -> tuple[int, int]:
    """Record the ends of blocks that fall before bar ``stop`` (the next one is bar ``mark``, of block ``block``) in
    a stretch whose bars are worth ``cash + qty × close`` (the expression every path marks a bar with; flat: ``cash``,
    without reading a close, which a flat bar need not have). Returns the next end and its block; the end is past
    every bar once only the last block is left (it ends with the last bar, recorded after the loop)."""
    n = close.shape[0]
    while mark < stop:
        blocks[block] = cash if qty == 0.0 else cash + qty * close[mark]
        block += 1
        mark = mark + mstep if block < last_block else n
    return mark, block


@njit(cache=True, inline="always")
def _block_returns(blocks: np.ndarray, final: float, capital: float) -> None:
    """Close the last block with the ``final`` equity (after the close-out), then turn each block's end equity into
    its return, in place (backwards: each reads the previous block's end; the first starts from ``capital``)."""
    last = blocks.shape[0] - 1
    if last < 0:
        return
    blocks[last] = final
    for b in range(last, 0, -1):
        blocks[b] = blocks[b] / blocks[b - 1] - 1.0
    blocks[0] = blocks[0] / capital - 1.0


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
    curve: np.ndarray,
    size: int,
    blocks: np.ndarray,
    mark0: int,
    mstep: int,
) -> None:
    """Run the fill model over all bars, filling ``acc`` (and ``trades`` when ``record``; with it, every bar's
    ``equity`` when ``size`` is 0, else the ``curve`` buckets of that size: see
    :func:`backfarm.engine.downsample.new_curve`).

    ``blocks`` (empty when not wanted) receives the return of each block of bars, from the equity at its end to the
    equity at the previous block's end (the first from ``capital``): block b < len − 1 ends with bar
    ``mark0 + b × mstep``, the last block with the last bar (see :mod:`backfarm.engine.returns`).

    ``stop_frac``/``target_frac`` are fractions of the average entry price, 0 meaning "no such exit". On a bar with
    an invalid price where one is needed the run stops and ``acc[BAD_BAR]`` holds its index (else -1).

    Bars that need work (a fill, an exit, a change of target, the last bar) take the general path below, with
    cash and quantity synced to ``acc`` around the fill helpers; stretches spent flat are skipped by scanning the
    targets only (nothing else can change there), and stretches spent holding run in :func:`_hold`.
    """
    n = close.shape[0]
    every_bar = record and size == 0  # the equity of every bar, or (with a curve kept) only its buckets' extremes
    if not record:
        size = 0
    acc[:] = 0.0
    acc[CASH] = capital
    acc[BAD_BAR] = -1.0
    cash, qty, stop, target = capital, 0.0, -1.0, np.inf
    prev_x = 0.0
    pending = False
    held_bars = 0
    st = _stats_start(capital)
    # The next block end to record (``n``: none left; the last block is set after the loop) and its block. Every
    # stretch below records the ends it passes with the equity it gives their bars.
    last_block = blocks.shape[0] - 1
    mark, block = (mark0, 0) if last_block > 0 else (n, 0)
    t = 0
    while t < n:
        o, h, lo, c = open_[t], high[t], low[t], close[t]
        if _bad(o) or _bad(h) or _bad(lo) or _bad(c):
            acc[BAD_BAR] = t
            return
        if pending:
            _rebalance(acc, prev_x, o, markup, markdown, fee, t, trades, record)
            cash, qty = acc[CASH], acc[QTY]
            stop, target = _exit_levels(acc, stop_frac, target_frac)
            pending = False
        if qty > 0.0 and (min(o, lo) <= stop or max(o, h) >= target):
            _exit(acc, o, lo, stop, target, markdown, fee, t, trades, record)
            cash, qty = acc[CASH], acc[QTY]
        if qty > 0.0:
            held_bars += 1
            if t == n - 1:
                _sell(acc, qty, c * (1.0 - markdown), fee, t, END, trades, record)
                cash, qty = acc[CASH], acc[QTY]
        e = cash + qty * c
        if every_bar:
            equity[t] = e
        _keep(curve, size, n, t, e)
        st = _mark(st, e)
        mark, block = _block_ends(blocks, mark, block, mstep, last_block, t + 1, cash, qty, close)
        x = _clean_target(exposure[t])
        pending = x != prev_x
        prev_x = x
        t += 1
        if pending:
            continue
        if qty == 0.0:
            s = _next_change(exposure, t, prev_x)
            if every_bar:
                equity[t:s] = cash
            _keep_flat(curve, size, n, t, s, cash)
            mark, block = _block_ends(blocks, mark, block, mstep, last_block, s, cash, 0.0, close)
            t = s
        else:
            t, st, held, pending = _hold(
                open_,
                high,
                low,
                close,
                exposure,
                t,
                cash,
                qty,
                stop,
                target,
                prev_x,
                st,
                equity,
                every_bar,
                curve,
                size,
            )
            held_bars += held
            mark, block = _block_ends(blocks, mark, block, mstep, last_block, t, cash, qty, close)
            if pending:
                prev_x = _clean_target(exposure[t - 1])
    acc[FINAL_EQUITY] = st[0]
    acc[MAX_DRAWDOWN] = st[2]
    acc[SUM_R] = st[4]
    acc[SUM_R2] = st[5]
    acc[SUM_NEG_R2] = st[6]
    acc[SUM_R3] = st[7]
    acc[SUM_R4] = st[8]
    acc[HELD_BARS] = held_bars
    _block_returns(blocks, st[0], capital)
