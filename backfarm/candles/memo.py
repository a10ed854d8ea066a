"""Candles and their indicators kept in memory per window, so a process loads and builds them once."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from backfarm._util.time import parse_iso
from backfarm.candles.load import load_candles
from backfarm.config import Settings
from backfarm.core.candles import Candles
from backfarm.core.jobs import DataKey
from backfarm.strategies.indicators import Indicators


@dataclass
class _Entry:
    candles: Candles
    indicators: Indicators
    nbytes: int


class CandleMemo:
    """Candles and their indicators per data key, kept in memory up to ``max_bytes`` (least recently used first out).

    One per process: a worker that gets another batch of the same window reuses both the arrays and every indicator
    already computed on them.
    """

    def __init__(self, settings: Settings, max_bytes: int = 256 * 2**20) -> None:
        self.settings = settings
        self.max_bytes = max_bytes
        self._entries: OrderedDict[DataKey, _Entry] = OrderedDict()
        self._bytes = 0

    def get(self, key: DataKey, fetch: bool = True) -> tuple[Candles, Indicators]:
        """The candles of ``key`` = (source, symbol, granularity, start, end) and their shared indicators."""
        entry = self._entries.get(key)
        if entry is None:
            source, symbol, granularity, start, end = key
            candles = load_candles(self.settings, source, symbol, granularity, parse_iso(start), parse_iso(end), fetch)
            # Indicators grow as strategies ask for them; budget a multiple of the raw columns for them.
            entry = _Entry(candles, Indicators(candles), nbytes=int(candles.close.nbytes) * 6 * 4)
            self._entries[key] = entry
            self._bytes += entry.nbytes
            self._evict(keep=key)
        else:
            self._entries.move_to_end(key)
        return entry.candles, entry.indicators

    def put(self, key: DataKey, candles: Candles) -> None:
        """Seed the memo with candles already loaded (the CLI loads them during validation)."""
        if key not in self._entries:
            entry = _Entry(candles, Indicators(candles), nbytes=int(candles.close.nbytes) * 6 * 4)
            self._entries[key] = entry
            self._bytes += entry.nbytes
            self._evict(keep=key)

    def prepare_for_fork(self) -> None:
        """Compute what every process would otherwise compute for itself (the candles' checksums, which results
        record) on the entries held now, so forked children inherit them."""
        for entry in self._entries.values():
            _ = entry.candles.checksum

    def _evict(self, keep: DataKey) -> None:
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            key, entry = next(iter(self._entries.items()))
            if key == keep:
                break
            del self._entries[key]
            self._bytes -= entry.nbytes
