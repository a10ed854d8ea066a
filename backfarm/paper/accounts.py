"""Paper accounts: cash, position, round trips, fills ledger and equity marks — the engine's fill model, event by event.

An :class:`Account` is one strategy on one symbol with its own capital (the unit a backtest job also has). Its
arithmetic is the compiled kernel's (:mod:`backfarm.engine.kernel`) operation for operation, in plain Python floats
(IEEE double, no fused operations, like the kernel without fastmath), so a replay that feeds it the bars of a
window in order produces the kernel's trades, equity marks and accumulators bit for bit:

- :meth:`Account.rebalance` is ``_rebalance`` (valuation at the reference price, buy/sell at the broker's prices);
- :meth:`Account.check_exits` is the stop/target part of ``simulate`` and ``_exit``;
- :meth:`Account.close_bar` does the held-bar count, the close-out on the last bar and ``_mark``;
- :meth:`Account.decide` is the change-of-target rule (``pending = x != prev_x``).

The only departure is opt-in: with :class:`SizeRules` (live sessions, from the product's increments) quantities are
rounded down to the base increment and orders below the product's minimums are refused. Replays use no rules, so
they match the engine exactly.

:meth:`Account.metrics` finishes the engine's metrics from the same accumulator slots the kernel fills.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from backfarm.engine import kernel
from backfarm.engine.kernel import _DD_SLACK
from backfarm.engine.metrics import Metrics, metrics_from_accumulators

SIGNAL, STOP, TARGET, END = kernel.EXIT_REASONS
"""Why a position was sold: a change of target, the stop-loss, the take-profit, the session's end."""
REBALANCE = "rebalance"
"""Fill reason of a trade toward a new target (buy or sell)."""


def clean_target(x: float) -> float:
    """The kernel's ``_clean_target``: NaN (and anything not above 0) → 0, above 1 → 1."""
    if not x > 0.0:
        return 0.0
    if x > 1.0:
        return 1.0
    return float(x)


@dataclass(frozen=True)
class SizeRules:
    """A product's order-size rules: quantities are multiples of ``base_increment``; smaller orders are refused."""

    base_increment: float
    base_min_size: float = 0.0
    quote_min_size: float = 0.0

    def floor(self, qty: float) -> float:
        """``qty`` rounded down to the increment (exact for increments like 0.001 or 1e-8)."""
        inc = self.base_increment
        if not inc > 0.0:
            return qty
        decimals = max(0, -math.floor(math.log10(inc) + 1e-9))
        steps = math.floor(qty / inc + 1e-9)
        return round(steps * inc, decimals + 2)

    def refusal(self, qty: float, price: float) -> str | None:
        """Why an order of ``qty`` at ``price`` is too small, or ``None`` when it may be sent."""
        if qty <= 0.0:
            return "rounds to zero at the base increment"
        if self.base_min_size > 0.0 and qty < self.base_min_size:
            return f"size {qty:g} below the minimum {self.base_min_size:g}"
        if self.quote_min_size > 0.0 and qty * price < self.quote_min_size:
            return f"notional {qty * price:.2f} below the minimum {self.quote_min_size:g}"
        return None


@dataclass(frozen=True)
class Prices:
    """What a fill needs from a quote: the valuation price and the buy and sell fill prices (costs included)."""

    ref: float
    """Marks the position when sizing a rebalance: the bar's open (replay) or the quote's mid (live)."""
    buy: float
    sell: float


@dataclass(frozen=True)
class Fill:
    """One simulated execution. ``fill_id`` is ``{account}:{bar}:{reason}``: one per account, bar and kind, so a
    resumed session can never record the same fill twice."""

    fill_id: str
    account: str
    bar: int
    """Index of the session bar the fill happened in (the backtest's bar index of the same window)."""
    bar_ts: int
    """Open time of that bar (ns UTC)."""
    side: str
    qty: float
    price: float
    fee: float
    reason: str
    """``rebalance``, ``stop``, ``target`` or ``end``."""
    time_ns: int
    """Feed time of the quote it filled at (ns UTC)."""
    ref: float
    """The reference price (bar open in replay, quote mid live): the fill price minus this is the cost of crossing."""
    bid: float
    ask: float
    cash: float
    """Cash after the fill."""
    position: float
    """Quantity held after the fill."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fill:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class RoundTrip:
    """A closed trade, flat to flat, with the engine's fields (``Trades.to_records``) plus times."""

    trade_id: str
    account: str
    entry_bar: int
    exit_bar: int
    entry_price: float
    exit_price: float
    qty: float
    pnl: float
    ret: float
    exit_reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


_STATE_FIELDS: tuple[str, ...] = (
    "cash",
    "qty",
    "avg_entry",
    "t_cost",
    "t_proceeds",
    "t_entry_bar",
    "t_buy_qty",
    "t_buy_notional",
    "t_sell_qty",
    "t_sell_notional",
    "notional",
    "fees",
    "trades",
    "wins",
    "losses",
    "gross_win",
    "gross_loss",
    "sum_trade_ret",
    "held_bars",
    "prev_x",
    "pending",
    "stop",
    "target",
    "bars",
    "e_prev",
    "peak",
    "max_dd",
    "dd_floor",
    "sum_r",
    "sum_r2",
    "sum_neg_r2",
    "neg_bars",
    "last_price",
)
"""Every piece of mutable state, in checkpoint order (floats round-trip exactly through JSON)."""


def state_fields(values: list[float] | None, capital: float) -> dict[str, float]:
    """A checkpointed account state by field name (a fresh account's values when there is none yet)."""
    if values is None:
        fresh = Account("", capital, 0.0, 0.0)
        values = fresh.state()
    return dict(zip(_STATE_FIELDS, values, strict=True))


class Account:
    """One strategy on one symbol: the kernel's state vector as attributes, advanced one event at a time."""

    def __init__(
        self,
        key: str,
        capital: float,
        fee: float,
        markdown: float,
        stop_frac: float = 0.0,
        target_frac: float = 0.0,
        rules: SizeRules | None = None,
    ) -> None:
        self.key = key
        self.capital = float(capital)
        self.fee = fee
        self.markdown = markdown
        """Fraction taken off an exit level (stop/target fills in replay) and off the last close (close-out)."""
        self.stop_frac = stop_frac
        self.target_frac = target_frac
        self.rules = rules
        self.dirty = True
        """Changed since the last checkpoint."""
        self.refused: str | None = None
        """Why the last order could not be sent (below the product's minimum), for the status view."""
        self.cash = self.capital
        self.qty = 0.0
        self.avg_entry = 0.0
        self.t_cost = self.t_proceeds = self.t_entry_bar = 0.0
        self.t_buy_qty = self.t_buy_notional = self.t_sell_qty = self.t_sell_notional = 0.0
        self.notional = self.fees = 0.0
        self.trades = self.wins = self.losses = 0.0
        self.gross_win = self.gross_loss = self.sum_trade_ret = 0.0
        self.held_bars = 0.0
        self.prev_x = 0.0
        self.pending = False
        self.stop, self.target = -1.0, math.inf
        self.bars = 0.0
        self.e_prev, self.peak, self.max_dd = self.capital, self.capital, 0.0
        self.dd_floor = self.capital * (1.0 + _DD_SLACK)
        self.sum_r = self.sum_r2 = self.sum_neg_r2 = self.neg_bars = 0.0
        self.last_price = math.nan

    # --- state ---------------------------------------------------------------------------------------------------

    def state(self) -> list[float]:
        """The mutable state as a list of floats (the checkpoint form)."""
        return [float(getattr(self, name)) for name in _STATE_FIELDS]

    def restore(self, values: list[float]) -> None:
        """Load a :meth:`state` list back."""
        for name, value in zip(_STATE_FIELDS, values, strict=True):
            setattr(self, name, float(value))
        self.pending = bool(self.pending)
        self.dirty = False

    @property
    def equity(self) -> float:
        """Cash plus the position marked at the last price seen (the last bar's close before any)."""
        price = self.last_price if math.isfinite(self.last_price) else 0.0
        return self.cash + self.qty * price

    # --- fills (kernel _buy / _sell / _close_round_trip) ----------------------------------------------------------

    def _buy(self, spend: float, price: float, bar: int) -> float:
        """Spend ``spend`` (fee included) at fill price ``price``; returns the quantity bought (0 when refused)."""
        qty = spend / (price * (1.0 + self.fee))
        if self.rules is not None:
            qty = self.rules.floor(qty)
            self.refused = self.rules.refusal(qty, price)
            if self.refused is not None:
                return 0.0
            spend = min(qty * price * (1.0 + self.fee), self.cash)
        notional = qty * price
        if self.qty == 0.0:
            self.t_cost = self.t_proceeds = 0.0
            self.t_entry_bar = float(bar)
            self.t_buy_qty = self.t_buy_notional = self.t_sell_qty = self.t_sell_notional = 0.0
            self.avg_entry = price
        else:
            self.avg_entry = (self.qty * self.avg_entry + notional) / (self.qty + qty)
        self.qty += qty
        self.cash -= spend
        self.t_cost += spend
        self.t_buy_qty += qty
        self.t_buy_notional += notional
        self.notional += notional
        self.fees += notional * self.fee
        return qty

    def _sell(self, qty: float, price: float, bar: int, reason: str) -> RoundTrip | None:
        """Sell ``qty`` at ``price`` paying the fee; returns the round trip when this sale closed it."""
        notional = qty * price
        fee_paid = notional * self.fee
        self.cash += notional - fee_paid
        self.t_proceeds += notional - fee_paid
        self.t_sell_qty += qty
        self.t_sell_notional += notional
        self.notional += notional
        self.fees += fee_paid
        if qty >= self.qty:
            self.qty = 0.0
            return self._close_round_trip(bar, reason)
        self.qty -= qty
        return None

    def _close_round_trip(self, bar: int, reason: str) -> RoundTrip:
        pnl = self.t_proceeds - self.t_cost
        ret = pnl / self.t_cost
        trip = RoundTrip(
            trade_id=f"{self.key}:{int(self.trades)}",
            account=self.key,
            entry_bar=int(self.t_entry_bar),
            exit_bar=bar,
            entry_price=self.t_buy_notional / self.t_buy_qty,
            exit_price=self.t_sell_notional / self.t_sell_qty,
            qty=self.t_buy_qty,
            pnl=pnl,
            ret=ret,
            exit_reason=reason,
        )
        self.trades += 1.0
        self.sum_trade_ret += ret
        if pnl > 0.0:
            self.wins += 1.0
            self.gross_win += pnl
        elif pnl < 0.0:
            self.losses += 1.0
            self.gross_loss += pnl
        return trip

    def _exit_levels(self) -> None:
        self.stop = self.avg_entry * (1.0 - self.stop_frac) if self.stop_frac > 0.0 else -1.0
        self.target = self.avg_entry * (1.0 + self.target_frac) if self.target_frac > 0.0 else math.inf

    # --- events --------------------------------------------------------------------------------------------------

    def rebalance(self, prices: Prices, bar: int) -> tuple[str, float, float, RoundTrip | None] | None:
        """Trade the pending target at a quote (the kernel's ``_rebalance``); clears ``pending``.

        Returns ``(side, qty, price, closed round trip or None)`` for the fill, or ``None`` when nothing traded.
        """
        self.pending = False
        self.dirty = True
        self.refused = None
        x = self.prev_x
        held = self.qty
        fill: tuple[str, float, float, RoundTrip | None] | None = None
        if x == 0.0:
            if held > 0.0:
                fill = ("sell", held, prices.sell, self._sell(held, prices.sell, bar, SIGNAL))
        else:
            current = held * prices.ref
            target = x * (self.cash + current)
            if target > current:
                spend = min(target - current, self.cash)
                if spend > 0.0:
                    qty = self._buy(spend, prices.buy, bar)
                    fill = ("buy", qty, prices.buy, None) if qty > 0.0 else None
            elif target < current:
                qty = min((current - target) / prices.ref, held)
                if self.rules is not None and qty < held:
                    qty = self.rules.floor(qty)
                    self.refused = self.rules.refusal(qty, prices.sell)
                if self.refused is None or self.rules is None:
                    fill = ("sell", qty, prices.sell, self._sell(qty, prices.sell, bar, SIGNAL))
        self._exit_levels()
        return fill

    def check_exits(self, o: float, h: float, lo: float) -> tuple[float, str] | None:
        """The stop/target touched in a bar with open ``o``, high ``h``, low ``lo``: ``(level, reason)`` or ``None``.

        Gaps through a level fill at the open; when both are touched the stop wins (the kernel's ``_exit``).
        """
        if not (self.qty > 0.0 and (min(o, lo) <= self.stop or max(o, h) >= self.target)):
            return None
        if o <= self.stop:
            return o, STOP
        if o >= self.target:
            return o, TARGET
        if lo <= self.stop:
            return self.stop, STOP
        return self.target, TARGET

    def exit_at(self, price: float, reason: str, bar: int) -> RoundTrip | None:
        """Sell the whole position at fill price ``price`` for a stop, target or the session's end."""
        self.dirty = True
        return self._sell(self.qty, price, bar, reason)

    def touched(self, bid: float) -> str | None:
        """Live exits: the reason when a quote's bid reaches the stop or the target while holding."""
        if self.qty > 0.0:
            if bid <= self.stop:
                return STOP
            if bid >= self.target:
                return TARGET
        return None

    def close_bar(self, close: float, bar: int, last: bool, close_out: float | None = None) -> RoundTrip | None:
        """Count a held bar, close out on the last bar (at ``close_out``, default close × (1 − markdown)), mark."""
        trip = None
        self.last_price = close
        if self.qty > 0.0:
            self.held_bars += 1.0
            if last:
                price = close * (1.0 - self.markdown) if close_out is None else close_out
                trip = self._sell(self.qty, price, bar, END)
        self._mark(self.cash + self.qty * close)
        # ``bars`` and ``last_price`` change every bar but are the same for every account of a symbol: the session
        # checkpoints them once per symbol, so an account spent flat is not rewritten bar after bar.
        self.bars += 1.0
        if self.qty > 0.0 or trip is not None:
            self.dirty = True
        return trip

    def _mark(self, e: float) -> None:
        """The kernel's ``_mark``: fold this bar's equity into the return and drawdown statistics."""
        if e == self.e_prev:
            return
        self.dirty = True
        r = e / self.e_prev - 1.0
        self.sum_r += r
        self.sum_r2 += r * r
        if r < 0.0:
            self.sum_neg_r2 += r * r
            self.neg_bars += 1.0  # no longer read (Sortino's condition is Σ(r<0)² > 0), kept: checkpoints hold it
        if e > self.peak:
            self.peak = e
            self.dd_floor = self.peak * (1.0 + (self.max_dd + _DD_SLACK))
        elif e < self.dd_floor and e / self.peak - 1.0 < self.max_dd:
            self.max_dd = e / self.peak - 1.0
            self.dd_floor = self.peak * (1.0 + (self.max_dd + _DD_SLACK))
        self.e_prev = e

    def decide(self, exposure: float) -> bool:
        """Take the strategy's target for the bar just closed; True when it changed (an order is now pending)."""
        x = clean_target(exposure)
        if x == self.prev_x:
            return False
        # ``pending or changed`` equals the kernel's ``pending = changed`` whenever the previous order was filled at
        # this bar's open (always in replay); live, an order held back by a stale or crossed book stays pending.
        self.prev_x = x
        self.pending = True
        self.dirty = True
        return True

    # --- results -------------------------------------------------------------------------------------------------

    @property
    def final_equity(self) -> float:
        """Equity at the last mark (after the close-out once the session has ended)."""
        return self.e_prev

    def accumulators(self) -> np.ndarray:
        """The kernel's accumulator vector for this account."""
        acc = np.zeros(kernel.N_SLOTS, dtype=np.float64)
        slots = {
            kernel.CASH: self.cash,
            kernel.QTY: self.qty,
            kernel.AVG_ENTRY: self.avg_entry,
            kernel.FINAL_EQUITY: self.e_prev,
            kernel.SUM_R: self.sum_r,
            kernel.SUM_R2: self.sum_r2,
            kernel.SUM_NEG_R2: self.sum_neg_r2,
            kernel.MAX_DRAWDOWN: self.max_dd,
            kernel.HELD_BARS: self.held_bars,
            kernel.NOTIONAL: self.notional,
            kernel.FEES: self.fees,
            kernel.TRADES: self.trades,
            kernel.WINS: self.wins,
            kernel.LOSSES: self.losses,
            kernel.GROSS_WIN: self.gross_win,
            kernel.GROSS_LOSS: self.gross_loss,
            kernel.SUM_TRADE_RET: self.sum_trade_ret,
            kernel.BAD_BAR: -1.0,
        }
        for slot, value in slots.items():
            acc[slot] = value
        return acc

    def metrics(self, bars_per_year: float) -> Metrics | None:
        """The engine's metrics over the bars marked so far (``None`` before two bars)."""
        n = int(self.bars)
        if n < 2:
            return None
        return metrics_from_accumulators(self.accumulators(), n, self.capital, bars_per_year)
