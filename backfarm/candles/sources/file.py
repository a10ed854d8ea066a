"""The ``file`` source: candles imported with ``backfarm data import``, served from the cache (it cannot fetch)."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from backfarm.candles.cache import CandleCache
from backfarm.candles.fileimport import SOURCE_NAME, import_hint
from backfarm.core.candles import check_symbol
from backfarm.errors import DataError, ValidationError, did_you_mean


class FileSource:
    """Serves imported candles from the cache; it cannot fetch (``can_fetch`` is False)."""

    name = SOURCE_NAME
    can_fetch = False

    def __init__(self, cache: CandleCache | None = None) -> None:
        self._cache = cache

    def symbols(self) -> list[str]:
        """Symbols with imported candles (empty without a cache)."""
        if self._cache is None:
            return []
        folder = self._cache.root / SOURCE_NAME
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def validate_symbol(self, symbol: str) -> None:
        """The symbol must look like ``BASE-QUOTE`` and, when a cache is attached, have been imported."""
        check_symbol(symbol, self.name)
        if self._cache is None or symbol in (known := self.symbols()):
            return
        problem = did_you_mean("file symbol", symbol, known) if known else f"no candles imported for '{symbol}'"
        raise ValidationError(f"{problem}; import them with: {import_hint(symbol, 'G')}")

    def fetch(self, symbol: str, granularity: str, start: datetime, end: datetime) -> dict[str, np.ndarray]:
        """Always fails: file candles only arrive by import."""
        raise DataError(
            f"nothing is imported for {symbol} {granularity} and the file source cannot fetch; "
            f"import a CSV or Parquet file with: {import_hint(symbol, granularity)}"
        )
