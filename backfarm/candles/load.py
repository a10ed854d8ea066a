"""Fill the cache from a source and load windows of candles from it, with gaps filled and counted.

``ensure_cached`` fetches only what is missing: absent or corrupt months, and the current (open) month once its
copy is older than ``settings.open_month_ttl_s``. Past months are written ``complete`` and never fetched again. Each
month is written only after its fetch finished, under the partition's file lock, so a killed fetch resumes where it
stopped and two processes on one machine never fetch the same month twice.

``load_candles`` reads the months of a window (pyarrow straight to numpy: no pandas on this path), fills missing
bars with flat bars at the previous close, and refuses windows with too many of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

from backfarm._util.time import NS_PER_SECOND, from_ns, to_ns, utc_now
from backfarm.candles.cache import CandleCache, Partition, PartitionMeta, empty_arrays, month_bounds, months_covering
from backfarm.candles.checks import first_bad_bar
from backfarm.candles.fileimport import import_hint
from backfarm.candles.sources import get_source
from backfarm.candles.sources.base import CandleSource
from backfarm.config import Settings
from backfarm.core.candles import COLUMNS, Candles, granularity_seconds
from backfarm.errors import BadSourceData, DataError, TemporaryError, ValidationError

log = logging.getLogger(__name__)

COMPLETE_GRACE_S = 600
"""A month counts as complete only this long after it ended, so a source's late last bars are not missed forever."""

Outcome = Literal["fetched", "skipped", "missing"]
ProgressCallback = Callable[[int, int, int], None]
"""``on_progress(done_partitions, total_partitions, bars_so_far)``."""


@dataclass(frozen=True)
class FetchReport:
    """What ``ensure_cached`` did: months fetched and written, months already fresh, bars written."""

    fetched: int
    skipped: int
    bars: int
    missing: int = 0
    """Months absent from the cache that the source cannot fetch (read-only sources such as ``file``)."""


# --- filling the cache ------------------------------------------------------------------------------------------


def ensure_cached(
    settings: Settings,
    source: CandleSource,
    symbol: str,
    granularity: str,
    start: datetime,
    end: datetime,
    on_progress: ProgressCallback | None = None,
    *,
    now: datetime | None = None,
) -> FetchReport:
    """Fetch the months of ``[start, end)`` that are missing, corrupt or (the open month) stale, one at a time."""
    granularity_seconds(granularity)
    lo, hi = _window(start, end)
    source.validate_symbol(symbol)
    now_ns = to_ns(now or utc_now())
    lo = max(lo, _first_available_ns(source, symbol, granularity))
    months = months_covering(lo, min(hi, now_ns))
    cache = CandleCache(settings.candles_dir)
    counts = {"fetched": 0, "skipped": 0, "missing": 0}
    bars = 0
    for done, month in enumerate(months, start=1):
        outcome, written = _refresh(cache, settings, source, symbol, granularity, month, now_ns)
        counts[outcome] += 1
        bars += written
        if on_progress is not None:
            on_progress(done, len(months), bars)
    return FetchReport(counts["fetched"], counts["skipped"], bars, counts["missing"])


def _refresh(
    cache: CandleCache, settings: Settings, source: CandleSource, symbol: str, granularity: str, month: str, now: int
) -> tuple[Outcome, int]:
    """Bring one month up to date; returns what happened and the bars written."""
    key = (source.name, symbol, granularity, month)
    ttl = settings.open_month_ttl_s
    if _fresh(cache.meta(*key), month, now, ttl):
        return "skipped", 0
    if not source.can_fetch:
        return ("skipped" if cache.path(*key).exists() else "missing"), 0
    with cache.lock(*key):
        if _fresh(cache.meta(*key), month, now, ttl):  # another process fetched it while we waited for the lock
            return "skipped", 0
        lo, hi = month_bounds(month)
        complete = now >= hi + COMPLETE_GRACE_S * NS_PER_SECOND
        try:
            raw = source.fetch(symbol, granularity, from_ns(lo), from_ns(min(hi, now)))
        except TemporaryError as exc:
            stale = cache.meta(*key)
            if stale is None:
                raise
            log.warning(
                "%s is unreachable (%s): using the cached %s %s %s, fetched %s",
                source.name, exc, symbol, granularity, month, f"{stale.fetched_at:%Y-%m-%d %H:%M} UTC",
            )  # fmt: skip
            return "skipped", 0
        arrays = _checked(_clean(raw, lo, hi), granularity_seconds(granularity) * NS_PER_SECOND, " ".join(key))
        cache.write(*key, arrays, complete=complete, fetched_at=from_ns(now))
    return "fetched", int(arrays["ts"].shape[0])


def _fresh(meta: PartitionMeta | None, month: str, now: int, ttl_s: float) -> bool:
    """A complete month is final; an open month is fresh for ``ttl_s``; a month that has ended since is not."""
    if meta is None:
        return False
    if meta.complete:
        return True
    _, hi = month_bounds(month)
    if now >= hi + COMPLETE_GRACE_S * NS_PER_SECOND:
        return False
    return now - to_ns(meta.fetched_at) < ttl_s * NS_PER_SECOND


def _clean(raw: dict[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
    """Schema dtypes, only bars inside the month, sorted; a bar sent twice alike kept once. Two *different* bars for
    one time are kept both, for :func:`_checked` to refuse (which one would be right?)."""
    cols = {c: np.asarray(raw[c], dtype=np.int64 if c == "ts" else np.float64) for c in COLUMNS}
    ts = cols["ts"]
    if ts.shape[0] > 1 and not np.all(np.diff(ts) > 0):
        order = np.lexsort([cols[c] for c in reversed(COLUMNS)])  # by time, then by every value
        cols = {c: v[order] for c, v in cols.items()}
        same = np.ones(ts.shape[0], dtype=bool)
        for c in COLUMNS:
            same[1:] &= cols[c][1:] == cols[c][:-1]
        same[0] = False
        cols = {c: v[~same] for c, v in cols.items()}
    return _slice(cols, lo, hi)


def _checked(cols: dict[str, np.ndarray], step: int, what: str) -> dict[str, np.ndarray]:
    """``cols`` if every bar is sound (:func:`backfarm.candles.checks.first_bad_bar`), on the bar grid, and alone at
    its time; else :class:`BadSourceData` naming the first bad bar, so nothing of the month is cached (and a month
    that is never cached is never marked complete: the next run fetches it again)."""
    ts = cols["ts"]
    twice = np.flatnonzero(ts[1:] == ts[:-1])
    if twice.size:
        i = int(twice[0])
        raise BadSourceData(
            f"{what}: the source sent two different bars for {_iso(int(ts[i]))} "
            f"({_bar(cols, i)} and {_bar(cols, i + 1)}); nothing of this month was cached"
        )
    off = np.flatnonzero(ts % step)
    if off.size:
        raise BadSourceData(
            f"{what}: the source sent a bar at {_iso(int(ts[off[0]]))}, off the {step // NS_PER_SECOND} s grid; "
            "nothing of this month was cached"
        )
    found = first_bad_bar(cols)
    if found is not None:
        i, why = found
        raise BadSourceData(f"{what}: the source sent a bad bar at {_iso(int(ts[i]))}: {why}; nothing of this month "
                            "was cached")  # fmt: skip
    return cols


def _bar(cols: dict[str, np.ndarray], i: int) -> str:
    return "/".join(f"{cols[c][i]:g}" for c in COLUMNS[1:])


def _first_available_ns(source: CandleSource, symbol: str, granularity: str) -> int:
    first = getattr(source, "first_available", None)
    return to_ns(first(symbol, granularity)) if first is not None else -(2**63)


# --- loading ----------------------------------------------------------------------------------------------------


def load_candles(
    settings: Settings,
    source: CandleSource | str,
    symbol: str,
    granularity: str,
    start: datetime,
    end: datetime,
    fetch: bool = True,
) -> Candles:
    """Bars with open time in ``[start, end)``, gaps filled with flat bars and counted; read-only arrays.

    The window starts at the first real bar in it and ends at the last one: bars are never invented at its edges.
    Bars missing at either edge count as gaps all the same (``gaps`` is every bar of ``[start, end)`` that is not
    there), so a window whose data covers only part of it is refused by the gap limit instead of being stored
    under a label that promises more than it holds.
    """
    src = get_source(source, settings) if isinstance(source, str) else source
    step = granularity_seconds(granularity) * NS_PER_SECOND
    lo, hi = _window(start, end)
    can_fetch = fetch and src.can_fetch
    if can_fetch:
        ensure_cached(settings, src, symbol, granularity, start, end)  # validates the symbol too
    cols = _read_window(CandleCache(settings.candles_dir), settings, src, symbol, granularity, lo, hi, can_fetch)
    if cols["ts"].shape[0] == 0:
        if not can_fetch:
            # Only now: validating may cost a request (coinbase), and an offline read of the cache needs none.
            src.validate_symbol(symbol)
        raise DataError(_no_data_message(settings, src, symbol, granularity, lo, hi))
    first, last = int(cols["ts"][0]), int(cols["ts"][-1])
    cols, inside = fill_gaps(cols, step)
    first_slot, last_slot = -(-lo // step) * step, (hi - 1) // step * step  # the grid's bars in [lo, hi)
    expected = (last_slot - first_slot) // step + 1
    gaps = inside + (first - first_slot) // step + (last_slot - last) // step
    if gaps and gaps / expected > settings.max_gap_share:
        raise DataError(
            f"{symbol} {granularity} {_span(lo, hi)}: {gaps / expected:.1%} of the bars are missing ({gaps:,} of "
            f"{expected:,}; the data covers {_iso(first)} → {_iso(last)}), more than the allowed "
            f"{settings.max_gap_share:.0%} (BACKFARM_MAX_GAP_SHARE)"
        )
    return Candles(
        src.name,
        symbol,
        granularity,
        ts=cols["ts"],
        open=cols["open"],
        high=cols["high"],
        low=cols["low"],
        close=cols["close"],
        volume=cols["volume"],
        gaps=gaps,
    )


def _read_window(
    cache: CandleCache,
    settings: Settings,
    src: CandleSource,
    symbol: str,
    granularity: str,
    lo: int,
    hi: int,
    can_fetch: bool,
) -> dict[str, np.ndarray]:
    """The cached bars in ``[lo, hi)``; a month found corrupt here is moved aside and, if possible, refetched."""
    parts: dict[str, Partition | None] = {}
    damaged = []
    for month in months_covering(lo, hi):
        key = (src.name, symbol, granularity, month)
        existed = cache.path(*key).exists()
        parts[month] = cache.read(*key)
        if existed and parts[month] is None:
            damaged.append(month)
    if damaged and can_fetch:
        ensure_cached(settings, src, symbol, granularity, from_ns(lo), from_ns(hi))
        for month in damaged:
            parts[month] = cache.read(src.name, symbol, granularity, month)
    chunks = [_slice(p.arrays, lo, hi) for p in parts.values() if p is not None and p.meta.rows]
    chunks = [chunk for chunk in chunks if chunk["ts"].shape[0]]
    if not chunks:
        return empty_arrays()
    if len(chunks) == 1:
        return chunks[0]  # views of the read-only Arrow buffers: no copy
    return {c: np.concatenate([chunk[c] for chunk in chunks]) for c in COLUMNS}


def _slice(cols: dict[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
    i, j = np.searchsorted(cols["ts"], [lo, hi])
    return {c: v[i:j] for c, v in cols.items()}


def fill_gaps(cols: dict[str, np.ndarray], step: int) -> tuple[dict[str, np.ndarray], int]:
    """Complete the regular grid from the first to the last bar with flat bars at the previous close.

    Returns the filled arrays and the number of bars added.
    """
    ts = cols["ts"]
    if int(ts[-1] - ts[0]) == (ts.shape[0] - 1) * step:
        return cols, 0  # strictly increasing (a cache invariant) and spanning exactly n bars: already complete
    offsets = ts - ts[0]
    if np.any(offsets % step):
        first_bad = int(np.argmax(offsets % step != 0))
        raise DataError(f"cached bar at {_iso(int(ts[first_bad]))} is off the {step // NS_PER_SECOND} s grid")
    slot = offsets // step
    n = int(slot[-1]) + 1
    if n == ts.shape[0]:
        return cols, 0
    present = np.zeros(n, bool)
    present[slot] = True
    last_real = np.cumsum(present) - 1  # index of the latest real bar at or before each slot
    prev_close = cols["close"][last_real]
    out = {"ts": ts[0] + np.arange(n, dtype=np.int64) * step, "close": prev_close}
    for c in ("open", "high", "low"):
        out[c] = prev_close.copy()
        out[c][slot] = cols[c]
    out["volume"] = np.zeros(n)
    out["volume"][slot] = cols["volume"]
    return out, n - ts.shape[0]


def available_range(
    settings: Settings, source_name: str, symbol: str, granularity: str
) -> tuple[datetime, datetime] | None:
    """Open times of the first and last cached bar of (source, symbol, granularity), or ``None``."""
    entry = CandleCache(settings.candles_dir).entry(source_name, symbol, granularity)
    if entry is None or entry.first_ts is None or entry.last_ts is None:
        return None
    return entry.first_ts, entry.last_ts


# --- messages ---------------------------------------------------------------------------------------------------


def _window(start: datetime, end: datetime) -> tuple[int, int]:
    lo, hi = to_ns(start), to_ns(end)
    if lo >= hi:
        raise ValidationError(f"empty window: start {_iso(lo)} is not before end {_iso(hi)}")
    return lo, hi


def _no_data_message(settings: Settings, src: CandleSource, symbol: str, granularity: str, lo: int, hi: int) -> str:
    parts = [f"no {src.name} candles for {symbol} {granularity} {_span(lo, hi)}"]
    cached = available_range(settings, src.name, symbol, granularity)
    if cached is not None:
        parts.append(f"the cache holds {_iso(to_ns(cached[0]))} to {_iso(to_ns(cached[1]))}")
    else:
        parts.append("nothing is cached")
    first = getattr(src, "first_available", None)
    if first is not None:
        parts.append(f"{src.name} history starts {_iso(to_ns(first(symbol, granularity)))}")
    if not src.can_fetch:
        parts.append(f"import with: {import_hint(symbol, granularity)}")
    return "; ".join(parts)


def _span(lo: int, hi: int) -> str:
    return f"from {_iso(lo)} to {_iso(hi)}"


def _iso(ns: int) -> str:
    return from_ns(ns).strftime("%Y-%m-%d %H:%M UTC")
