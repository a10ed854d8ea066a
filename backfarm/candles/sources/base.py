"""Where candles come from. A source fills the cache; the engine only ever reads the cache.

Built-in sources: ``synthetic`` (generated, deterministic), ``file`` (imported by ``backfarm data import``; cannot
fetch) and ``coinbase`` (Coinbase Advanced Trade public market data).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import numpy as np


class CandleSource(Protocol):
    """A provider of raw candles for the cache."""

    name: str
    """Cache directory name and the ``--source`` value."""
    can_fetch: bool
    """False for sources whose data only arrives by import (``file``)."""

    def fetch(self, symbol: str, granularity: str, start: datetime, end: datetime) -> dict[str, np.ndarray]:
        """Bars whose open time is in ``[start, end)``: ``ts`` (int64 ns UTC) and float64 OHLCV, sorted, unique.

        Missing bars (no trades) may simply be absent; the loader fills and counts them.
        """
        ...

    def validate_symbol(self, symbol: str) -> None:
        """Raise ``ValidationError`` (with a suggestion) if the source does not know ``symbol``."""
        ...
