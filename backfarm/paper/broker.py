"""The simulated broker: market orders against a quote, plus the safety rules that decide whether to trade at all.

Prices. Live, a buy fills at the ask and a sell at the bid, each moved by the slippage, and positions are valued at
the mid. In replay the quote *is* the bar's open with the engine's spread, so fills use exactly the engine's
expressions — ``open × (1 + half spread + slippage)`` and ``open × (1 − half spread − slippage)`` — and valuation
uses the open: that is what makes a replay and a backtest of the same window identical. Fees are charged by the
account on each side's notional.

Safety. No order is filled on a quote that is crossed or locked (bid ≥ ask), non-finite or non-positive, or stale:
older than ``stale_after`` relative to the newest quote on the feed, or received longer than ``stale_after`` ago
(wall clock). The order stays pending until a usable quote arrives, and the session shows why in its status.
Nothing here talks to an exchange: a paper session never sends an order anywhere.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from backfarm._util.time import NS_PER_SECOND
from backfarm.coinbase.quotes import Product, Quote
from backfarm.core.costs import Costs
from backfarm.paper.accounts import Prices, SizeRules


@dataclass(frozen=True)
class Tick:
    """A quote as the session sees it: top of book, a reference price, feed time and receipt time."""

    symbol: str
    bid: float
    ask: float
    ref: float
    """The bar's open in replay, the mid live."""
    time_ns: int
    """Feed time (the exchange's timestamp live, the bar's open time in replay), ns UTC."""
    received: float
    """Wall-clock receipt time (``time.time()``)."""
    source: str = "replay"
    """``replay``, ``ws`` or ``rest``."""

    @classmethod
    def from_quote(cls, quote: Quote) -> Tick:
        """A live quote; its feed time is the exchange's timestamp (the receipt time when it has none)."""
        stamp = quote.exchange_time or quote.receive_time
        return cls(
            symbol=quote.product,
            bid=quote.bid,
            ask=quote.ask,
            ref=(quote.bid + quote.ask) / 2.0,
            time_ns=int(round(stamp.timestamp() * NS_PER_SECOND)),
            received=quote.receive_time.timestamp(),
            source=quote.source,
        )


class Broker:
    """Turns quotes into fill prices and refuses to trade on bad ones."""

    def __init__(self, costs: Costs, *, synthetic: bool, stale_after_s: float) -> None:
        self.costs = costs
        self.synthetic = synthetic
        """Quotes are bars' opens (replay): use the engine's expressions."""
        self.stale_after_s = stale_after_s
        self._markup = costs.buy_markup
        self._markdown = costs.sell_markdown
        self._half = costs.spread_bps / 2.0 / 1e4
        self._slip = costs.slippage_bps / 1e4

    def replay_tick(self, symbol: str, open_: float, ts: int) -> Tick:
        """The quote of a replayed bar: its open, with the engine's half spread on either side."""
        return Tick(symbol, open_ * (1.0 - self._half), open_ * (1.0 + self._half), open_, ts, time.time())

    def prices(self, tick: Tick) -> Prices:
        """Valuation and fill prices at ``tick`` (see the module docstring)."""
        if self.synthetic:
            o = tick.ref
            return Prices(o, o * (1.0 + self._markup), o * (1.0 - self._markdown))
        return Prices(tick.ref, tick.ask * (1.0 + self._slip), tick.bid * (1.0 - self._slip))

    def exit_price(self, level: float) -> float:
        """Fill price of a stop or target exit at ``level`` (replay): the level less the markdown."""
        return level * (1.0 - self._markdown)

    def sell_price(self, tick: Tick) -> float:
        """What a market sell gets at ``tick`` (live exits and the close-out)."""
        return self.prices(tick).sell

    def refusal(self, tick: Tick, head_ns: int, now: float | None = None) -> str | None:
        """Why ``tick`` must not be traded on (crossed, invalid, stale), or ``None`` when it is usable.

        ``head_ns`` is the newest feed time seen on the session's feed (any symbol).
        """
        if self.synthetic:
            return None
        bid, ask = tick.bid, tick.ask
        if not (math.isfinite(bid) and math.isfinite(ask) and bid > 0.0 and ask > 0.0):
            return f"no usable book (bid {bid}, ask {ask})"
        if bid >= ask:
            return f"crossed book (bid {bid:g} >= ask {ask:g})"
        behind = (head_ns - tick.time_ns) / NS_PER_SECOND
        if behind > self.stale_after_s:
            return f"stale quote ({behind:.0f} s behind the feed)"
        age = (time.time() if now is None else now) - tick.received
        if age > self.stale_after_s:
            return f"stale quote (received {age:.0f} s ago)"
        return None


def size_rules(product: Product) -> SizeRules:
    """A product's increments and minimums as order-size rules (NaN fields mean "no rule")."""

    def clean(value: float) -> float:
        return value if math.isfinite(value) and value > 0.0 else 0.0

    return SizeRules(clean(product.base_increment), clean(product.base_min_size), clean(product.quote_min_size))
