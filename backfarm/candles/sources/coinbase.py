"""The ``coinbase`` candle source: Coinbase Advanced Trade candles for the Parquet cache (DESIGN §3).

Public market data by default (no key needed); the authenticated twins when a key is configured. Requests are
paged by ≤ 300 buckets and spaced by the rate limiter; buckets without trades are simply absent (the loader fills
and counts them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from backfarm.candles.cache import CandleCache
from backfarm.coinbase.client import CoinbaseClient, candle_pages
from backfarm.config import Settings
from backfarm.core.candles import granularity_seconds
from backfarm.errors import TemporaryError

log = logging.getLogger(__name__)


class CoinbaseSource:
    """A ``CandleSource`` backed by :class:`CoinbaseClient`."""

    name = "coinbase"
    can_fetch = True

    def __init__(self, client: CoinbaseClient, cache: CandleCache | None = None) -> None:
        self.client = client
        self.cache = cache
        """The candle cache this source fills: with Coinbase unreachable, a symbol it holds is taken as valid."""
        self.on_page: Callable[[int], None] | None = None
        """Called with the candle count of every finished request when ``fetch`` gets no ``on_page``."""
        self._offline: set[str] = set()

    def __repr__(self) -> str:
        return f"CoinbaseSource({self.client!r})"

    @classmethod
    def from_settings(cls, settings: Settings, **client_kwargs: Any) -> CoinbaseSource:
        """A source for the configured API URL and key; ``client_kwargs`` go to the client (e.g. ``limiter``)."""
        return cls(CoinbaseClient.from_settings(settings, **client_kwargs), CandleCache(settings.candles_dir))

    def fetch(
        self,
        symbol: str,
        granularity: str,
        start: datetime,
        end: datetime,
        *,
        on_page: Callable[[int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Bars whose open time is in ``[start, end)``: ``ts`` int64 ns UTC and float64 OHLCV, ascending, unique.

        Naive datetimes are taken as UTC. ``on_page(n_candles)`` is called after each request (progress bars).
        """
        granularity_seconds(granularity)  # ValidationError with a suggestion for an unknown name
        progress = on_page if on_page is not None else self.on_page
        return self.client.get_candles(symbol, granularity, _utc(start), _utc(end), on_page=progress)

    def validate_symbol(self, symbol: str) -> None:
        """``ValidationError`` (did you mean …) unless Coinbase lists ``symbol``; the product list is cached. With
        Coinbase unreachable, a symbol whose candles are cached is taken as valid (and the user told so), so a
        backtest on cached candles runs offline."""
        try:
            self.client.check_product(symbol)
        except TemporaryError as exc:
            if self.cache is None or not self.cache.holds(self.name, symbol):
                raise
            if symbol not in self._offline:
                self._offline.add(symbol)
                log.warning("Coinbase is unreachable (%s): %s is checked against the candle cache only", exc, symbol)

    def requests_needed(self, granularity: str, start: datetime, end: datetime) -> int:
        """How many candle requests ``fetch`` will make for this window (for progress bars and estimates)."""
        return len(candle_pages(granularity, _utc(start), _utc(end)))

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
