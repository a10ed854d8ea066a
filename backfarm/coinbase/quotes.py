"""Typed market data shared by the REST client and the WebSocket feed: quotes, products, order books.

Coinbase sends prices and sizes as JSON strings (sometimes empty); these helpers turn them into floats (NaN when
absent) and RFC 3339 timestamps (up to nanoseconds, ``Z``) into aware ``datetime`` objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def num(value: Any) -> float:
    """A float from a Coinbase string or number; NaN for ``""``/``None``/garbage."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from RFC 3339 (nanoseconds are truncated to microseconds) or UNIX seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    text = str(value).strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def now_utc() -> datetime:
    """The current time, aware, UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Quote:
    """Top of book for one product at one moment (from the WebSocket ticker or REST polling)."""

    product: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    last: float
    exchange_time: datetime | None
    receive_time: datetime
    source: str = "ws"
    """``ws`` (ticker channel) or ``rest`` (polling fallback)."""

    @property
    def mid(self) -> float:
        """(bid + ask) / 2."""
        return (self.bid + self.ask) / 2.0

    @property
    def spread_bps(self) -> float:
        """Ask − bid in basis points of the mid."""
        mid = self.mid
        return (self.ask - self.bid) / mid * 1e4 if mid > 0 else math.nan

    def same_prices(self, other: Quote | None) -> bool:
        """True when ``other`` shows the same product, bid, ask, sizes and last price (a repeat, not news)."""
        if other is None:
            return False
        mine = (self.product, self.bid, self.ask, self.bid_size, self.ask_size, self.last)
        theirs = (other.product, other.bid, other.ask, other.bid_size, other.ask_size, other.last)
        return all(_same(a, b) for a, b in zip(mine, theirs, strict=True))


@dataclass(frozen=True)
class Product:
    """The fields of a Coinbase product that backfarm uses; the full JSON object is kept in ``raw``."""

    product_id: str
    base_currency: str
    quote_currency: str
    status: str
    trading_disabled: bool
    price: float
    base_increment: float
    quote_increment: float
    base_min_size: float
    quote_min_size: float
    alias: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Product:
        """Parse one product object (list item or ``GET product`` body)."""
        product_id = str(data.get("product_id", ""))
        base, _, quote = product_id.partition("-")
        return cls(
            product_id=product_id,
            base_currency=str(data.get("base_currency_id") or data.get("base_display_symbol") or base),
            quote_currency=str(data.get("quote_currency_id") or data.get("quote_display_symbol") or quote),
            status=str(data.get("status") or ""),
            trading_disabled=_flag(data.get("trading_disabled")) or _flag(data.get("is_disabled")),
            price=num(data.get("price")),
            base_increment=num(data.get("base_increment")),
            quote_increment=num(data.get("quote_increment") or data.get("price_increment")),
            base_min_size=num(data.get("base_min_size")),
            quote_min_size=num(data.get("quote_min_size")),
            alias=str(data.get("alias") or ""),
            raw=data,
        )


@dataclass(frozen=True)
class ProductBook:
    """An order book snapshot: bids descending and asks ascending, as ``(price, size)`` pairs."""

    product_id: str
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    time: datetime | None
    last: float = math.nan

    @classmethod
    def from_json(cls, book: dict[str, Any], last: Any = None) -> ProductBook:
        """Parse a ``pricebook`` object (product book or one entry of best bid/ask)."""
        return cls(
            product_id=str(book.get("product_id", "")),
            bids=_levels(book.get("bids")),
            asks=_levels(book.get("asks")),
            time=parse_time(book.get("time")),
            last=num(last),
        )

    def quote(self, receive_time: datetime | None = None) -> Quote:
        """The top of this book as a ``Quote`` (``source='rest'``); NaN for an empty side."""
        bid, bid_size = self.bids[0] if self.bids else (math.nan, math.nan)
        ask, ask_size = self.asks[0] if self.asks else (math.nan, math.nan)
        return Quote(
            self.product_id, bid, ask, bid_size, ask_size, self.last, self.time, receive_time or now_utc(), "rest"
        )


def _same(a: object, b: object) -> bool:
    # NaN != NaN, but two quotes that both lack a last price are still the same quote.
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _levels(levels: Any) -> list[tuple[float, float]]:
    if not isinstance(levels, list):
        return []
    return [(num(lv.get("price")), num(lv.get("size"))) for lv in levels if isinstance(lv, dict)]


def _flag(value: Any) -> bool:
    # Booleans arrive as JSON booleans, but tolerate "true"/"True" strings as well.
    return value is True or (isinstance(value, str) and value.lower() == "true")
