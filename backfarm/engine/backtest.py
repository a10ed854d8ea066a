"""Run a backtest: validate inputs, call the compiled kernel, finish the metrics, package the result.

Fill model
----------
Target exposure x_t in [0,1] decided at bar t's close (NaN → 0, clipped to [0,1]); the previous target starts at 0.
When x_t differs from x_{t-1}, the position is rebalanced at bar t+1's open to x_t × equity (equity marked at that
open). Buys fill at open×(1+buy_markup), sells at open×(1−sell_markdown) (see Costs); fee = fee_bps/1e4 × notional
on each side; a buy of cash S buys q = S / (p_buy × (1 + fee)) so cash never goes negative. A target on the last bar
cannot trade (no next bar). Optional stop-loss / take-profit (Costs.stop_loss_bps, take_profit_bps) relative to the
position's average entry fill price, checked within each bar the position is held, including the entry bar (after
the open fill), from the bar's low/high: if the open already gaps through the level, fill at the open; if both are
touched in one bar, the stop wins; stop/target exits sell the whole position at the level (with sell_markdown and
fee); after such an exit stay flat until the target changes again. A position still open after the last bar is sold
at the last close (with markdown and fee), exit_reason 'end', so every result is flat. A round trip (trade) runs from
flat to flat; partial rebalances add to it (pnl = all sell proceeds net of fees − all buy costs incl fees; ret = pnl /
buy costs).

Details the rule above leaves open, as implemented:

- Equity is marked at the raw open/close (no liquidation costs) except at the final close-out. A rebalance buys with
  cash S = x_t × equity − position value (at most the cash held), or sells (position value − x_t × equity) / open
  units; x_t = 0 sells the whole position. An unchanged target never trades, even if prices drift.
- The open is checked for a gap through the stop first, then through the target (which then fills at the better
  open), then the low against the stop, then the high against the target.
- A trade's ``entry_price``/``exit_price`` are the quantity-weighted mean fill prices (spread and slippage included,
  fees excluded) of its buys/sells; ``qty`` is the total quantity it bought.
- Prices are checked where the simulation reads them (every bar with a fill, a held position or a change of target):
  a missing, non-positive or infinite price there is a ``DataError``. Bars spent flat are never read, so they cannot
  affect the result (candles are validated when they are loaded, not here).

Metric definitions are in :mod:`backfarm.engine.metrics`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from backfarm.core.costs import Costs
from backfarm.engine import downsample, kernel
from backfarm.engine.metrics import Metrics, metrics_from_accumulators
from backfarm.engine.returns import Blocks, Moments, moments_from_accumulators
from backfarm.errors import DataError, ValidationError

_NO_EQUITY = np.empty(0, dtype=np.float64)
_NO_TRADES = np.empty((0, len(kernel.TRADE_COLUMNS)), dtype=np.float64)
_NO_CURVE = np.empty((0, 4), dtype=np.float64)
_NO_BLOCKS = np.empty(0, dtype=np.float64)
_INT_COLUMNS = frozenset({"entry_bar", "exit_bar", "exit_reason"})


@dataclass(frozen=True)
class Trades:
    """Closed round trips as parallel arrays, one element per trade, in the order they closed."""

    entry_bar: np.ndarray
    exit_bar: np.ndarray
    entry_price: np.ndarray
    exit_price: np.ndarray
    qty: np.ndarray
    pnl: np.ndarray
    ret: np.ndarray
    exit_reason: np.ndarray
    """Codes into :attr:`names`."""

    names: ClassVar[dict[int, str]] = dict(enumerate(kernel.EXIT_REASONS))
    """Exit reason code → name: 0 'signal', 1 'stop', 2 'target', 3 'end'."""

    def __len__(self) -> int:
        return len(self.entry_bar)

    @classmethod
    def from_table(cls, table: np.ndarray) -> Trades:
        """Split the kernel's float table (columns ``kernel.TRADE_COLUMNS``) into typed arrays."""
        columns = np.array(table.T)  # one copy, row per column: each slice below is contiguous
        return cls(
            **{
                name: columns[i].astype(np.int64) if name in _INT_COLUMNS else columns[i]
                for i, name in enumerate(kernel.TRADE_COLUMNS)
            }
        )

    def reasons(self) -> list[str]:
        """Exit reason names, one per trade."""
        return [self.names[int(code)] for code in self.exit_reason]

    def to_records(self) -> list[dict[str, int | float | str]]:
        """One JSON-ready dict per trade."""
        return [
            {
                "entry_bar": int(self.entry_bar[i]),
                "exit_bar": int(self.exit_bar[i]),
                "entry_price": float(self.entry_price[i]),
                "exit_price": float(self.exit_price[i]),
                "qty": float(self.qty[i]),
                "pnl": float(self.pnl[i]),
                "ret": float(self.ret[i]),
                "exit_reason": self.names[int(self.exit_reason[i])],
            }
            for i in range(len(self))
        ]


@dataclass(frozen=True)
class BacktestResult:
    """Metrics (keys ``METRICS``), the moments of the bar returns, final equity, and — when recorded — the equity
    curve and the trades; the block returns when asked for."""

    metrics: Metrics
    final_equity: float
    equity: np.ndarray | None = None
    """Equity marked at every bar's close (the last one after the close-out), when recorded."""
    trade_table: np.ndarray | None = None
    """The closed round trips as the kernel wrote them (one row per trade, columns ``kernel.TRADE_COLUMNS``, all
    float64), when recorded; :attr:`trades` is the typed view of it."""
    curve: tuple[np.ndarray, np.ndarray] | None = None
    """With ``run_backtest(..., curve_points=m)`` on more than m bars, instead of :attr:`equity`: the at most m points
    of the equity curve that min/max bucketing keeps (see :func:`kernel.curve_buckets`): their bars, ascending, and
    their equity."""
    moments: Moments | None = None
    """The moments of the bar returns (:mod:`backfarm.engine.returns`)."""
    block_returns: np.ndarray | None = None
    """With ``run_backtest(..., blocks=...)``: the return of each block (:func:`backfarm.engine.returns.blocks_for`)."""

    @cached_property
    def trades(self) -> Trades | None:
        """The closed round trips as typed arrays (built on first use: a sweep's stored artifacts read the table
        directly, and splitting it costs a tenth of a backtest)."""
        return None if self.trade_table is None else Trades.from_table(self.trade_table)


def _as_array(name: str, values: np.ndarray) -> np.ndarray:
    """A contiguous 1-D float64 view (copied only if needed)."""
    array = np.ascontiguousarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValidationError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _prices(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Open, high, low, close as float64 arrays of one length n >= 2."""
    prices = tuple(_as_array(name, a) for name, a in zip(("open", "high", "low", "close"), arrays, strict=True))
    n = len(prices[3])
    if any(len(a) != n for a in prices):
        raise ValidationError(f"price arrays differ in length: {[len(a) for a in prices]}")
    if n < 2:
        raise ValidationError(f"a backtest needs at least 2 bars, got {n}")
    return prices


def _exposure(exposure: np.ndarray, n: int) -> np.ndarray:
    array = _as_array("exposure", exposure)
    if len(array) != n:
        raise ValidationError(f"exposure has {len(array)} values for {n} bars")
    return array


def _check_scalars(capital: float, bars_per_year: float) -> None:
    if not 0.0 < capital < float("inf"):
        raise ValidationError(f"capital must be positive and finite, got {capital}")
    if not 0.0 < bars_per_year < float("inf"):
        raise ValidationError(f"bars per year must be positive and finite, got {bars_per_year}")


_scratch = threading.local()


def _trade_table(n: int) -> np.ndarray:
    """A per-thread table with room for every round trip an n-bar run can close, reused from call to call.

    A round trip starts with a buy from flat, and a buy happens only at a bar's open, so there are at most n.
    Reusing one table (instead of sizing a fresh one from the number of target changes, a full pass over the
    targets) costs nothing: only the rows the kernel writes are ever touched, and they are copied out.
    """
    table: np.ndarray | None = getattr(_scratch, "trades", None)
    if table is None or table.shape[0] < n:
        table = np.empty((max(n, 1), len(kernel.TRADE_COLUMNS)), dtype=np.float64)
        _scratch.trades = table
    return table


def _simulate(
    prices: tuple[np.ndarray, ...],
    exposure: np.ndarray,
    costs: Costs,
    capital: float,
    record: bool,
    curve_points: int = 0,
    blocks: Blocks | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the kernel; returns (accumulators, equity, trade table, curve buckets, each block's return).

    With ``record`` and ``curve_points`` below the number of bars, the kernel keeps each bucket's extremes instead
    of every bar's equity (``equity`` is then empty).
    """
    n = len(exposure)
    acc = np.empty(kernel.N_SLOTS, dtype=np.float64)
    curve, size = _NO_CURVE, 0
    if record and 0 < curve_points < n:
        curve, size = downsample.new_curve(n, curve_points)
    equity = np.empty(n, dtype=np.float64) if record and not size else _NO_EQUITY
    table = _trade_table(n) if record else _NO_TRADES
    stop = (costs.stop_loss_bps or 0.0) / 1e4
    target = (costs.take_profit_bps or 0.0) / 1e4
    open_, high, low, close = prices
    ends = np.empty(blocks.count, dtype=np.float64) if blocks is not None else _NO_BLOCKS
    first_end, step = (blocks.first_end, blocks.bars) if blocks is not None else (0, 1)
    kernel.simulate(
        open_, high, low, close, exposure, costs.buy_markup, costs.sell_markdown, costs.fee, stop, target,
        float(capital), acc, equity, table, record, curve, size, ends, first_end, step,
    )  # fmt: skip
    if acc[kernel.BAD_BAR] >= 0:
        bar = int(acc[kernel.BAD_BAR])
        raise DataError(f"bar {bar} has a missing, non-positive or non-finite price")
    return acc, equity, table, curve, ends


def run_backtest(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    exposure: np.ndarray,
    costs: Costs,
    capital: float,
    bars_per_year: float,
    *,
    record: bool = False,
    curve_points: int = 0,
    blocks: Blocks | None = None,
) -> BacktestResult:
    """Backtest one target-exposure series on one candle window (see the module docstring for the fill model).

    With ``record`` the result also carries the equity curve and the trade list; without it nothing proportional to
    the number of bars is allocated. With ``curve_points`` as well (at least 6), a window of more bars keeps only
    the points of the curve that min/max bucketing keeps (:func:`kernel.curve_buckets`) as
    :attr:`BacktestResult.curve`: the kernel folds each bar into its bucket as it goes, which is cheaper than
    writing every bar and scanning them again, and gives exactly the points a bucketing of the full curve gives.
    With ``blocks`` (of this window: :func:`backfarm.engine.returns.blocks_for`) the result carries the return of
    each block.
    """
    if curve_points and curve_points < 6:
        raise ValidationError(f"curve_points must be at least 6, got {curve_points}")
    prices = _prices(open_, high, low, close)
    n = len(prices[3])
    _check_scalars(capital, bars_per_year)
    if blocks is not None and blocks.count != 1:  # one block ends with the last bar, whatever its fields say
        last_end = blocks.first_end + (blocks.count - 2) * blocks.bars
        if blocks.count < 1 or blocks.bars < 1 or blocks.first_end < 0 or last_end >= n - 1:
            raise ValidationError(
                f"blocks must each end before the last bar (the last block ends with it), got {blocks}"
            )
    acc, equity, table, buckets, ends = _simulate(
        prices, _exposure(exposure, n), costs, capital, record, curve_points, blocks
    )
    values = acc.tolist()  # plain floats: cheaper to finish than numpy scalars
    metrics = metrics_from_accumulators(values, n, capital, bars_per_year)
    moments = moments_from_accumulators(values, n)
    final = values[kernel.FINAL_EQUITY]
    per_block = ends if blocks is not None else None
    if not record:
        return BacktestResult(metrics, final, moments=moments, block_returns=per_block)
    # A copy: the table is this thread's scratch, reused by the next run.
    trades = table[: int(acc[kernel.TRADES])].copy()
    if len(buckets):
        # Bar 0 cannot trade (a fill needs the next bar's open), so its equity is the capital; bar n-1's is final.
        points = downsample.curve_points(buckets, n, float(capital), final)
        return BacktestResult(metrics, final, None, trades, points, moments, per_block)
    return BacktestResult(metrics, final, equity, trades, None, moments, per_block)


def run_many(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    exposures: list[np.ndarray],
    costs: Costs,
    capital: float,
    bars_per_year: float,
) -> list[dict[str, float | int | None]]:
    """Metrics of several exposure series on the same candles (prices are validated once)."""
    prices = _prices(open_, high, low, close)
    n = len(prices[3])
    _check_scalars(capital, bars_per_year)
    results = []
    for exposure in exposures:
        acc, _, _, _, _ = _simulate(prices, _exposure(exposure, n), costs, capital, False)
        results.append(metrics_from_accumulators(acc, n, capital, bars_per_year))
    return results
