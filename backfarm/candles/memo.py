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

    @property
    def nbytes(self) -> int:
        """What the entry holds now: the candle columns and every indicator computed on them so far."""
        c = self.candles
        columns = (c.ts, c.open, c.high, c.low, c.close, c.volume)
        return sum(int(a.nbytes) for a in columns) + self.indicators.nbytes


DEFAULT_BYTES = 64 * 2**20
"""A local process's memo: a window or two (batches come grouped by window, so a process rarely needs more; a
30-day window of 1-minute bars with every built-in grid's indicators is ~40 MB)."""


class CandleMemo:
    """Candles and their indicators per data key, kept in memory up to ``max_bytes`` (least recently used first out).

    One per process: a worker that gets another batch of the same window reuses both the arrays and every indicator
    already computed on them. Indicators grow after an entry is handed out (strategies compute them), so the bytes
    are counted again, from the arrays themselves, whenever an entry is added: a 30-day window of 1-minute bars with
    the indicators of every built-in grid holds ~40 MB, several times its candles.
    """

    def __init__(self, settings: Settings, max_bytes: int = DEFAULT_BYTES) -> None:
        self.settings = settings
        self.max_bytes = max_bytes
        self._entries: OrderedDict[DataKey, _Entry] = OrderedDict()

    def get(self, key: DataKey, fetch: bool = True) -> tuple[Candles, Indicators]:
        """The candles of ``key`` = (source, symbol, granularity, start, end) and their shared indicators."""
        entry = self._entries.get(key)
        if entry is None:
            source, symbol, granularity, start, end = key
            candles = load_candles(self.settings, source, symbol, granularity, parse_iso(start), parse_iso(end), fetch)
            entry = _Entry(candles, Indicators(candles))
            self._entries[key] = entry
            self._evict(keep=key)
        else:
            self._entries.move_to_end(key)
        return entry.candles, entry.indicators

    def put(self, key: DataKey, candles: Candles) -> None:
        """Seed the memo with candles already loaded (the CLI loads them during validation)."""
        if key not in self._entries:
            self._entries[key] = _Entry(candles, Indicators(candles))
            self._evict(keep=key)

    def prepare_for_fork(self) -> None:
        """Compute what every process would otherwise compute for itself (the candles' checksums, which results
        record) on the entries held now, so forked children inherit them."""
        for entry in self._entries.values():
            _ = entry.candles.checksum

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return sum(entry.nbytes for entry in self._entries.values())

    def _evict(self, keep: DataKey) -> None:
        """Drop the least recently used entries (never ``keep``) until what is held fits in ``max_bytes``."""
        held = self.nbytes
        while held > self.max_bytes and len(self._entries) > 1:
            key, entry = next(iter(self._entries.items()))
            if key == keep:
                break
            held -= entry.nbytes
            del self._entries[key]
