"""Filling the cache (ensure_cached) and loading windows (load_candles): freshness, resumption, gaps, errors."""

from __future__ import annotations

import fcntl
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backfarm._util.time import NS_PER_SECOND
from backfarm.candles import cache as cache_mod
from backfarm.candles.cache import CandleCache, CorruptCacheWarning, month_bounds
from backfarm.candles.load import available_range, ensure_cached, fill_gaps, load_candles
from backfarm.candles.sources import get_source
from backfarm.candles.sources.file import FileSource
from backfarm.candles.sources.synthetic import SyntheticSource
from backfarm.config import Settings
from backfarm.core.candles import COLUMNS
from backfarm.errors import DataError, ValidationError

HOUR = 3600 * NS_PER_SECOND


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


class Clock:
    """A settable 'now' shared by the source and ensure_cached."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class CountingSource(SyntheticSource):
    """The synthetic source, recording every fetch and optionally failing on the n-th one."""

    def __init__(self, clock: Clock | None = None, fail_on: int | None = None) -> None:
        super().__init__(seed=0, clock=clock)
        self.calls: list[tuple[str, datetime, datetime]] = []
        self.fail_on = fail_on

    def fetch(self, symbol: str, granularity: str, start: datetime, end: datetime) -> dict[str, np.ndarray]:
        self.calls.append((granularity, start, end))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise KeyboardInterrupt("killed mid-fetch")
        return super().fetch(symbol, granularity, start, end)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings().with_(data_dir=tmp_path / "data")


def test_get_source(settings: Settings) -> None:
    assert get_source("synthetic", settings).name == "synthetic"
    file_source = get_source("file", settings)
    assert file_source.name == "file" and not file_source.can_fetch
    with pytest.raises(ValidationError, match=r"unknown source 'synthtic' \(did you mean 'synthetic'\?\)"):
        get_source("synthtic", settings)


def test_coinbase_source_from_settings(settings: Settings) -> None:
    source = get_source("coinbase", settings)
    assert source.name == "coinbase" and source.can_fetch


def test_second_ensure_cached_fetches_nothing(settings: Settings) -> None:
    src = CountingSource()
    progress: list[tuple[int, int, int]] = []
    first = ensure_cached(
        settings, src, "BTC-USD", "1h", utc(2024, 1, 20), utc(2024, 3, 2), lambda *args: progress.append(args)
    )
    bars_jan, bars_feb, bars_mar = 31 * 24, 29 * 24, 31 * 24
    assert (first.fetched, first.skipped, first.bars) == (3, 0, bars_jan + bars_feb + bars_mar)
    assert progress == [(1, 3, bars_jan), (2, 3, bars_jan + bars_feb), (3, 3, bars_jan + bars_feb + bars_mar)]
    assert [(s, e) for _, s, e in src.calls] == [
        (utc(2024, 1, 1), utc(2024, 2, 1)),
        (utc(2024, 2, 1), utc(2024, 3, 1)),
        (utc(2024, 3, 1), utc(2024, 4, 1)),
    ]  # whole months
    second = ensure_cached(settings, src, "BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 4, 1))
    assert (second.fetched, second.skipped, second.bars) == (0, 3, 0)
    assert len(src.calls) == 3
    metas = [CandleCache(settings.candles_dir).meta("synthetic", "BTC-USD", "1h", m) for m in ("2024-01", "2024-03")]
    assert all(m is not None and m.complete for m in metas)


def test_months_before_history_are_not_fetched(settings: Settings) -> None:
    src = CountingSource()
    report = ensure_cached(settings, src, "BTC-USD", "1d", utc(2016, 6, 1), utc(2017, 2, 1))
    assert report.fetched == 1 and [c[1] for c in src.calls] == [utc(2017, 1, 1)]


def test_open_month_refreshes_only_after_ttl(settings: Settings) -> None:
    clock = Clock(utc(2024, 3, 15, 12, 0))
    src = CountingSource(clock)
    window = ("BTC-USD", "1h", utc(2024, 2, 1), utc(2024, 4, 1))
    cache = CandleCache(settings.candles_dir)

    report = ensure_cached(settings, src, *window, now=clock.now)
    assert (report.fetched, report.bars) == (2, 29 * 24 + 14 * 24 + 12)  # March up to the 11:00 bar
    march = cache.meta("synthetic", "BTC-USD", "1h", "2024-03")
    assert march is not None and not march.complete and march.fetched_at == clock.now

    clock.now += timedelta(minutes=59)  # within the 1 h TTL
    assert ensure_cached(settings, src, *window, now=clock.now).fetched == 0

    clock.now += timedelta(minutes=2)  # TTL passed: only the open month is fetched again
    report = ensure_cached(settings, src, *window, now=clock.now)
    assert (report.fetched, report.skipped, report.bars) == (1, 1, 14 * 24 + 13)
    assert src.calls[-1][1:] == (utc(2024, 3, 1), clock.now)

    longer = settings.with_(open_month_ttl_s=6 * 3600.0)
    clock.now += timedelta(hours=5)
    assert ensure_cached(longer, src, *window, now=clock.now).fetched == 0

    clock.now = utc(2024, 4, 1, 0, 30)  # March has ended: refetched once more, now complete for good
    report = ensure_cached(longer, src, *window, now=clock.now)
    assert (report.fetched, report.bars) == (1, 31 * 24)
    march = cache.meta("synthetic", "BTC-USD", "1h", "2024-03")
    assert march is not None and march.complete
    clock.now = utc(2030, 1, 1)
    assert ensure_cached(settings, src, *window, now=clock.now).fetched == 0


def test_killed_fetch_resumes_cleanly(settings: Settings) -> None:
    dying = CountingSource(fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        ensure_cached(settings, dying, "ETH-USD", "1h", utc(2023, 1, 1), utc(2023, 4, 1))
    folder = CandleCache(settings.candles_dir).path("synthetic", "ETH-USD", "1h", "2023-01").parent
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["2023-01.parquet"]
    assert not list(folder.glob("*.tmp"))
    resumed = CountingSource()
    report = ensure_cached(settings, resumed, "ETH-USD", "1h", utc(2023, 1, 1), utc(2023, 4, 1))
    assert (report.fetched, report.skipped) == (2, 1)
    assert [c[1] for c in resumed.calls] == [utc(2023, 2, 1), utc(2023, 3, 1)]


def test_read_only_source_fetches_nothing(settings: Settings) -> None:
    cache = CandleCache(settings.candles_dir)
    cache.write("file", "BTC-USD", "1h", "2024-01", hourly(0, 24), complete=True)
    report = ensure_cached(settings, FileSource(cache), "BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 3, 1))
    assert (report.fetched, report.skipped, report.missing, report.bars) == (0, 1, 1, 0)


def test_two_processes_fetch_a_month_once(settings: Settings) -> None:
    """A fetcher that waited for the lock re-checks the cache and skips what the lock holder wrote."""
    cache = CandleCache(settings.candles_dir)
    key = ("synthetic", "BTC-USD", "1h", "2024-01")
    lock_file = cache.path(*key).with_name(".2024-01.lock")
    lock_file.parent.mkdir(parents=True)
    waiting = CountingSource()
    with open(lock_file, "a+b") as other_process:
        fcntl.flock(other_process.fileno(), fcntl.LOCK_EX)
        worker = threading.Thread(
            target=ensure_cached, args=(settings, waiting, "BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 2, 1))
        )
        worker.start()
        # Meanwhile the lock holder writes the month, the way CandleCache.write would (temp file + rename).
        data = SyntheticSource().fetch("BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 2, 1))
        cols = cache_mod._check_arrays(data, "2024-01")
        table = cache_mod._to_table(cols, cache_mod._meta_for(cols, True, cache_mod.utc_now()))
        tmp = lock_file.with_name(".2024-01.other.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, cache.path(*key))
        fcntl.flock(other_process.fileno(), fcntl.LOCK_UN)
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert waiting.calls == []


def test_load_returns_the_exact_window(settings: Settings) -> None:
    start, end = utc(2024, 1, 30, 5), utc(2024, 2, 2, 7)
    candles = load_candles(settings, "synthetic", "SOL-USD", "5m", start, end)
    expected = SyntheticSource().fetch("SOL-USD", "5m", start, end)
    assert candles.source == "synthetic" and candles.synthetic and candles.gaps == 0
    assert len(candles) == (3 * 24 + 2) * 12
    for c in COLUMNS:
        np.testing.assert_array_equal(getattr(candles, c), expected[c])
        assert not getattr(candles, c).flags.writeable
    again = load_candles(settings, SyntheticSource(), "SOL-USD", "5m", start, end, fetch=False)
    assert again.checksum == candles.checksum


def test_load_validates_the_window(settings: Settings) -> None:
    with pytest.raises(ValidationError, match="empty window"):
        load_candles(settings, "synthetic", "BTC-USD", "1h", utc(2024, 2, 1), utc(2024, 2, 1))
    with pytest.raises(ValidationError, match="granularity"):
        load_candles(settings, "synthetic", "BTC-USD", "2m", utc(2024, 1, 1), utc(2024, 2, 1))
    for fetch in (True, False):
        with pytest.raises(ValidationError, match="BASE-QUOTE"):
            load_candles(settings, "synthetic", "BTCUSD", "1h", utc(2024, 1, 1), utc(2024, 2, 1), fetch=fetch)


def hourly(first: int, last: int, skip: tuple[int, ...] = (), month: str = "2024-01") -> dict[str, np.ndarray]:
    """Hourly bars ``first..last-1`` hours into ``month`` (minus ``skip``), close = 100 + hour."""
    hours = np.array([h for h in range(first, last) if h not in skip], dtype=np.int64)
    close = 100.0 + hours
    return {
        "ts": month_bounds(month)[0] + hours * HOUR,
        "open": close - 0.25,
        "high": close + 1.0,
        "low": close - 1.0,
        "close": close,
        "volume": np.full(hours.shape, 3.0),
    }


def test_gaps_are_filled_flat_and_counted(settings: Settings) -> None:
    CandleCache(settings.candles_dir).write(
        "file", "BTC-USD", "1h", "2024-01", hourly(2, 40, skip=(10, 11, 12)), complete=True
    )
    # The window asks from midnight, but the data starts at 02:00: leading bars are not invented, and count as
    # missing (2 leading + 3 inside of the window's 40 bars: 12.5%, above the default 10%).
    with pytest.raises(DataError, match=r"12\.5% of the bars are missing \(5 of 40; the data covers 2024-01-01 02:00 "):
        load_candles(settings, "file", "BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 2, 16))
    lenient = settings.with_(max_gap_share=0.2)
    candles = load_candles(lenient, "file", "BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 2, 16))
    assert len(candles) == 38 and candles.gaps == 5
    assert candles.ts[0] == month_bounds("2024-01")[0] + 2 * HOUR
    assert np.all(np.diff(candles.ts) == HOUR)
    filled = slice(8, 11)  # hours 10, 11, 12
    for c in ("open", "high", "low", "close"):
        assert getattr(candles, c)[filled].tolist() == [109.0] * 3  # the 09:00 close
    assert candles.volume[filled].tolist() == [0.0] * 3
    assert candles.open[11] == 112.75 and candles.volume[11] == 3.0  # real bars resume at 13:00


def test_too_many_gaps_is_an_error(settings: Settings) -> None:
    CandleCache(settings.candles_dir).write(
        "file", "BTC-USD", "1h", "2024-01", hourly(0, 20, skip=(3, 4, 5)), complete=True
    )
    with pytest.raises(DataError, match=r"BTC-USD 1h from 2024-01-01 00:00 UTC to 2024-01-01 20:00 UTC: 15\.0% "):
        load_candles(settings, "file", "BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 1, 20))
    lenient = settings.with_(max_gap_share=0.2)
    assert load_candles(lenient, "file", "BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 1, 20)).gaps == 3
    # A day asked for, 20 hours held: the 4 missing at the end count too (7 of 24), however the window is cut.
    held = r"29\.2% of the bars are missing \(7 of 24; the data covers 2024-01-01 00:00 UTC → 2024-01-01 19:00 UTC\)"
    with pytest.raises(DataError, match=held):
        load_candles(lenient, "file", "BTC-USD", "1h", utc(2024, 1, 1), utc(2024, 1, 2))


def test_fill_gaps_refuses_off_grid_bars() -> None:
    cols = hourly(0, 3)
    cols["ts"] = cols["ts"] + np.array([0, 1, 2 * HOUR + 7])
    with pytest.raises(DataError, match="off the 3600 s grid"):
        fill_gaps(cols, HOUR)


def test_no_data_says_what_is_available(settings: Settings) -> None:
    with pytest.raises(DataError, match="nothing is cached; synthetic history starts 2017-01-01 00:00 UTC"):
        load_candles(settings, "synthetic", "BTC-USD", "1d", utc(2015, 1, 1), utc(2016, 1, 1))
    CandleCache(settings.candles_dir).write("file", "ETH-USD", "1h", "2024-01", hourly(0, 5), complete=True)
    with pytest.raises(DataError, match="the cache holds 2024-01-01 00:00 UTC to 2024-01-01 04:00 UTC"):
        load_candles(settings, "file", "ETH-USD", "1h", utc(2024, 2, 1), utc(2024, 3, 1))
    with pytest.raises(DataError, match="import with: backfarm data import PATH --symbol ETH-USD --granularity 1d"):
        load_candles(settings, "file", "ETH-USD", "1d", utc(2024, 1, 1), utc(2024, 2, 1))


def test_truncated_partition_is_refetched_by_load(settings: Settings) -> None:
    window = ("BTC-USD", "1h", utc(2024, 1, 10), utc(2024, 1, 12))
    first = load_candles(settings, "synthetic", *window)
    path = CandleCache(settings.candles_dir).path("synthetic", "BTC-USD", "1h", "2024-01")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.warns(CorruptCacheWarning, match="2024-01.parquet"):
        again = load_candles(settings, "synthetic", *window)
    assert again.checksum == first.checksum
    assert len(list(path.parent.glob("2024-01.parquet.corrupt-*"))) == 1


def test_damaged_data_behind_a_good_footer_is_refetched(settings: Settings) -> None:
    window = ("BTC-USD", "1h", utc(2024, 1, 10), utc(2024, 1, 12))
    first = load_candles(settings, "synthetic", *window)
    cache = CandleCache(settings.candles_dir)
    path = cache.path("synthetic", "BTC-USD", "1h", "2024-01")
    table = pq.read_table(path)
    broken = table.set_column(4, "close", pa.array(table.column("close").to_numpy()[::-1]))
    pq.write_table(broken, path)  # same footer metadata, different content: only the checksum can tell
    with pytest.warns(CorruptCacheWarning, match="checksum mismatch"):
        again = load_candles(settings, "synthetic", *window)
    assert again.checksum == first.checksum


def test_available_range(settings: Settings) -> None:
    assert available_range(settings, "synthetic", "BTC-USD", "1d") is None
    ensure_cached(settings, SyntheticSource(), "BTC-USD", "1d", utc(2023, 11, 5), utc(2024, 1, 3))
    assert available_range(settings, "synthetic", "BTC-USD", "1d") == (utc(2023, 11, 1), utc(2024, 1, 31))
