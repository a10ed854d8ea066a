"""The one candle schema, the granularities, and the in-memory ``Candles`` the engine consumes.

On disk (Parquet) and in memory the columns are ``ts`` (bar open time, UTC, int64 nanoseconds since the epoch) and
``open, high, low, close, volume`` (float64). Rows are sorted by ``ts``, unique, and regularly spaced once gaps are
filled. ``Candles`` holds them as contiguous numpy arrays: no pandas on the hot path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from backfarm.errors import ValidationError, did_you_mean

GRANULARITIES: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "6h": 21600,
    "1d": 86400,
}
"""Coinbase's eight candle granularities, name → seconds."""

COLUMNS: tuple[str, ...] = ("ts", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")


def granularity_seconds(name: str) -> int:
    """Seconds per bar for a granularity name, or a ``ValidationError`` with a suggestion."""
    try:
        return GRANULARITIES[name]
    except KeyError:
        raise ValidationError(did_you_mean("granularity", name, GRANULARITIES)) from None


def bars_per_year(bar_seconds: int) -> float:
    """365 × 86400 / bar seconds: crypto trades every day of the year."""
    return 365.0 * 86400.0 / bar_seconds


@dataclass(frozen=True, eq=False)
class Candles:
    """A window of candles for one (source, symbol, granularity), as read-only numpy arrays.

    ``gaps`` counts the bars that were missing in the source and filled with flat bars (open = high = low = close =
    previous close, volume 0). ``checksum`` fingerprints the arrays so a result can record what it was computed on.
    """

    source: str
    symbol: str
    granularity: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    gaps: int = 0
    _checksum: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        for name in COLUMNS:
            arr = getattr(self, name)
            if arr.flags.writeable:
                arr.flags.writeable = False

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def bar_seconds(self) -> int:
        """Seconds per bar."""
        return GRANULARITIES[self.granularity]

    @property
    def synthetic(self) -> bool:
        """True when the candles are generated, not market data (results must say so)."""
        return self.source == "synthetic"

    @property
    def checksum(self) -> str:
        """A content hash of all columns (computed once, on demand)."""
        if not self._checksum:
            self._checksum.append(checksum_arrays(*(getattr(self, c) for c in COLUMNS)))
        return self._checksum[0]

    def slice(self, start: int, stop: int) -> Candles:
        """Bars ``[start, stop)`` as a new ``Candles`` sharing memory."""
        return Candles(
            self.source,
            self.symbol,
            self.granularity,
            ts=self.ts[start:stop],
            open=self.open[start:stop],
            high=self.high[start:stop],
            low=self.low[start:stop],
            close=self.close[start:stop],
            volume=self.volume[start:stop],
            gaps=self.gaps,
        )


def checksum_arrays(*arrays: np.ndarray) -> str:
    """BLAKE2b (128 bit) over the raw bytes of the arrays, in order."""
    digest = hashlib.blake2b(digest_size=16)
    for arr in arrays:
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$")
"""Product names: ``BASE-QUOTE`` in capitals and digits (Coinbase's form)."""


def check_symbol(symbol: str, source: str) -> None:
    """Raise ``ValidationError`` unless ``symbol`` looks like ``BASE-QUOTE`` in capitals and digits."""
    if SYMBOL_RE.match(symbol):
        return
    hint = symbol.strip().upper().replace("/", "-").replace("_", "-")
    suggestion = f" (did you mean '{hint}'?)" if SYMBOL_RE.match(hint) else ""
    raise ValidationError(
        f"invalid symbol '{symbol}' for the {source} source: use BASE-QUOTE, e.g. BTC-USD{suggestion}"
    )
