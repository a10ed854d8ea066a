"""Candles around a paper session: the warm-up before a live session and the reference window of its report.

Both are short windows next to "now". The candle cache stores whole months and refreshes the current one only
after a TTL, so it may lack the last hour; these windows are read from the cache when it covers them completely and
otherwise fetched directly from the source (not written to the cache: a few hundred bars are not worth a month's
partition, and a live window keeps growing).
"""

from __future__ import annotations

import numpy as np

from backfarm._util.time import NS_PER_SECOND, from_ns, iso
from backfarm.candles.load import fill_gaps, load_candles
from backfarm.candles.sources import get_source
from backfarm.config import Settings
from backfarm.core.candles import COLUMNS, Candles, granularity_seconds
from backfarm.errors import DataError, UserError


def window_candles(settings: Settings, source: str, symbol: str, granularity: str, lo_ns: int, hi_ns: int) -> Candles:
    """Bars with open times in ``[lo_ns, hi_ns)``, gaps filled flat; empty when the window is."""
    step = granularity_seconds(granularity) * NS_PER_SECOND
    if hi_ns <= lo_ns:
        return empty_candles(source, symbol, granularity)
    lo, hi = from_ns(lo_ns), from_ns(hi_ns)
    try:
        cached = load_candles(settings, source, symbol, granularity, lo, hi, fetch=False)
        if int(cached.ts[0]) <= lo_ns and int(cached.ts[-1]) >= hi_ns - step:
            return cached
    except UserError:
        pass  # not cached (or not completely): ask the source
    src = get_source(source, settings)
    raw = src.fetch(symbol, granularity, lo, hi)
    if raw["ts"].shape[0] == 0:
        raise DataError(f"no {source} candles for {symbol} {granularity} from {iso(lo)} to {iso(hi)}")
    cols, gaps = fill_gaps({c: np.asarray(raw[c]) for c in COLUMNS}, step)
    return candles_of(src.name, symbol, granularity, cols, gaps)


def candles_of(source: str, symbol: str, granularity: str, cols: dict[str, np.ndarray], gaps: int = 0) -> Candles:
    """``Candles`` from a dict of the schema's columns."""
    return Candles(
        source, symbol, granularity, ts=cols["ts"], open=cols["open"], high=cols["high"], low=cols["low"],
        close=cols["close"], volume=cols["volume"], gaps=gaps,
    )  # fmt: skip


def empty_candles(source: str, symbol: str, granularity: str) -> Candles:
    """A window with no bars."""
    return candles_of(
        source, symbol, granularity, {c: np.empty(0, np.int64 if c == "ts" else np.float64) for c in COLUMNS}
    )
