"""The monthly Parquet cache: round trips, atomic writes, locking, corruption handling and listing."""

from __future__ import annotations

import fcntl
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backfarm._util.time import NS_PER_SECOND, from_ns, to_ns
from backfarm.candles import cache as cache_mod
from backfarm.candles.cache import CandleCache, CorruptCacheWarning, month_bounds, month_key, months_covering
from backfarm.core.candles import COLUMNS

MIN = 60 * NS_PER_SECOND
KEY = ("synthetic", "BTC-USD", "1m", "2024-02")


def bars(month: str, n: int, skip: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """``n`` one-minute bars from the start of ``month``, minus the bar indices in ``skip``."""
    start, _ = month_bounds(month)
    idx = np.array([i for i in range(n) if i not in skip], dtype=np.int64)
    close = 100.0 + idx
    return {
        "ts": start + idx * MIN,
        "open": close - 0.5,
        "high": close + 1.0,
        "low": close - 1.0,
        "close": close,
        "volume": np.full(idx.shape, 2.0),
    }


@pytest.fixture
def cache(tmp_path: Path) -> CandleCache:
    return CandleCache(tmp_path / "candles")


def test_time_and_month_helpers() -> None:
    assert to_ns(datetime(2024, 2, 1)) == to_ns(datetime(2024, 2, 1, tzinfo=UTC)) == 1706745600 * NS_PER_SECOND
    assert from_ns(1706745600 * NS_PER_SECOND + 1500) == datetime(2024, 2, 1, 0, 0, 0, 1, tzinfo=UTC)
    assert month_key(to_ns(datetime(2024, 2, 29, 23, 59))) == "2024-02"
    lo, hi = month_bounds("2024-02")
    assert (hi - lo) // (86400 * NS_PER_SECOND) == 29
    assert months_covering(lo - 1, hi + 1) == ["2024-01", "2024-02", "2024-03"]
    assert months_covering(lo, hi) == ["2024-02"]
    assert months_covering(hi, lo) == []


def test_layout_and_round_trip(cache: CandleCache) -> None:
    assert cache.path(*KEY) == cache.root / "synthetic" / "BTC-USD" / "1m" / "2024-02.parquet"
    assert cache.read(*KEY) is None and cache.meta(*KEY) is None
    data = bars("2024-02", 500)
    fetched = datetime(2024, 3, 2, 10, 0, tzinfo=UTC)
    written = cache.write(*KEY, data, complete=True, fetched_at=fetched)
    part = cache.read(*KEY)
    assert part is not None
    for c in COLUMNS:
        np.testing.assert_array_equal(part.arrays[c], data[c])
        assert not part.arrays[c].flags.writeable
    assert part.meta == written == cache.meta(*KEY)
    assert part.meta.rows == 500 and part.meta.complete and part.meta.fetched_at == fetched
    assert part.meta.first_ts == datetime(2024, 2, 1, tzinfo=UTC)
    assert part.meta.last_ts == datetime(2024, 2, 1, 8, 19, tzinfo=UTC)
    assert pq.read_schema(cache.path(*KEY)).field("ts").type == pa.timestamp("ns", tz="UTC")


def test_empty_partition(cache: CandleCache) -> None:
    cache.write(*KEY, bars("2024-02", 0), complete=True)
    part = cache.read(*KEY)
    assert part is not None and part.meta.rows == 0 and part.meta.first_ts is None


def test_write_is_atomic_and_cleans_leftovers(cache: CandleCache) -> None:
    folder = cache.path(*KEY).parent
    folder.mkdir(parents=True)
    (folder / ".2024-02.dead.tmp").write_bytes(b"left by a killed writer")
    cache.write(*KEY, bars("2024-02", 10), complete=False)
    cache.write(*KEY, bars("2024-02", 20), complete=True)  # replaces in place
    assert sorted(p.name for p in folder.iterdir()) == [".2024-02.lock", "2024-02.parquet"]
    part = cache.read(*KEY)
    assert part is not None and part.meta.rows == 20 and part.meta.complete


def test_failed_write_leaves_the_old_file(cache: CandleCache, monkeypatch: pytest.MonkeyPatch) -> None:
    cache.write(*KEY, bars("2024-02", 10), complete=True)

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        cache.write(*KEY, bars("2024-02", 20), complete=True)
    folder = cache.path(*KEY).parent
    assert sorted(p.name for p in folder.iterdir()) == [".2024-02.lock", "2024-02.parquet"]
    part = cache.read(*KEY)
    assert part is not None and part.meta.rows == 10


def test_write_rejects_broken_arrays(cache: CandleCache) -> None:
    with pytest.raises(ValueError, match="outside the month"):
        cache.write(*KEY, bars("2024-03", 5), complete=True)
    data = bars("2024-02", 5)
    data["ts"] = data["ts"][::-1].copy()
    with pytest.raises(ValueError, match="strictly increasing"):
        cache.write(*KEY, data, complete=True)
    with pytest.raises(ValueError, match="lack columns"):
        cache.write(*KEY, {"ts": np.zeros(1, np.int64)}, complete=True)


def test_path_components_are_checked(cache: CandleCache) -> None:
    with pytest.raises(Exception, match="invalid cache path component"):
        cache.path("synthetic", "../etc", "1m", "2024-01")
    with pytest.raises(Exception, match="invalid month"):
        cache.path("synthetic", "BTC-USD", "1m", "2024-13")


def assert_quarantined(cache: CandleCache) -> None:
    folder = cache.path(*KEY).parent
    names = [p.name for p in folder.iterdir()]
    assert "2024-02.parquet" not in names
    assert len([n for n in names if n.startswith("2024-02.parquet.corrupt-")]) == 1


def test_truncated_file_is_moved_aside(cache: CandleCache) -> None:
    cache.write(*KEY, bars("2024-02", 1000), complete=True)
    path = cache.path(*KEY)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.warns(CorruptCacheWarning, match=r"2024-02\.parquet"):
        assert cache.read(*KEY) is None
    assert_quarantined(cache)
    corrupt = next(path.parent.glob("2024-02.parquet.corrupt-*"))
    assert corrupt.read_bytes() == raw[: len(raw) // 2]  # kept, not deleted
    assert cache.read(*KEY) is None  # now simply missing, no second warning


def test_unreadable_footer_is_moved_aside_by_meta(cache: CandleCache) -> None:
    cache.write(*KEY, bars("2024-02", 10), complete=True)
    cache.path(*KEY).write_bytes(b"not parquet at all")
    with pytest.warns(CorruptCacheWarning):
        assert cache.meta(*KEY) is None
    assert_quarantined(cache)


def write_raw(cache: CandleCache, table: pa.Table) -> None:
    path = cache.path(*KEY)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_checksum_mismatch_is_moved_aside(cache: CandleCache) -> None:
    data = bars("2024-02", 50)
    cache.write(*KEY, data, complete=True)
    table = pq.read_table(cache.path(*KEY))
    meta = json.loads(table.schema.metadata[b"backfarm"])
    close = np.array(data["close"])
    close[7] += 1.0  # content changed behind the metadata's back
    tampered = table.set_column(4, "close", pa.array(close)).replace_schema_metadata(
        {b"backfarm": json.dumps(meta).encode()}
    )
    write_raw(cache, tampered)
    with pytest.warns(CorruptCacheWarning, match="checksum mismatch"):
        assert cache.read(*KEY) is None
    assert_quarantined(cache)


def test_a_file_under_another_months_name_is_moved_aside(cache: CandleCache) -> None:
    """A January file copied as February's (it would load as February with -2,880 gaps) is as wrong as a corrupt
    one: read and meta both quarantine it."""
    january = (*KEY[:3], "2024-01")
    cache.write(*january, bars("2024-01", 100), complete=True)
    cache.path(*KEY).write_bytes(cache.path(*january).read_bytes())
    with pytest.warns(CorruptCacheWarning, match=r"its bars \(2024-01-01 → 2024-01-01\) are not in 2024-02"):
        assert cache.meta(*KEY) is None
    assert_quarantined(cache)
    cache.path(*KEY).write_bytes(cache.path(*january).read_bytes())
    for old in cache.path(*KEY).parent.glob("2024-02.parquet.corrupt-*"):
        old.unlink()
    with pytest.warns(CorruptCacheWarning, match="are not in 2024-02"):
        assert cache.read(*KEY) is None
    assert_quarantined(cache)
    assert cache.read(*january) is not None  # the real January is fine


def test_wrong_schema_is_moved_aside(cache: CandleCache) -> None:
    data = bars("2024-02", 5)
    write_raw(cache, pa.table({c: pa.array(data[c]) for c in COLUMNS}))  # ts as plain int64, no metadata
    with pytest.warns(CorruptCacheWarning, match="unexpected schema"):
        assert cache.read(*KEY) is None
    assert_quarantined(cache)


def test_lock_excludes_other_holders_and_is_reentrant(cache: CandleCache) -> None:
    lock_file = cache.path(*KEY).with_name(".2024-02.lock")
    with cache.lock(*KEY):
        with cache.lock(*KEY):  # re-entrant in one thread: write() inside a fetch lock must not deadlock
            cache.write(*KEY, bars("2024-02", 3), complete=True)
        with open(lock_file, "a+b") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another process would
    with open(lock_file, "a+b") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # released afterwards


def test_entries_summarise_from_footers(cache: CandleCache) -> None:
    cache.write("synthetic", "BTC-USD", "1m", "2024-03", bars("2024-03", 100, skip=(5, 6, 50)), complete=False)
    cache.write("synthetic", "BTC-USD", "1m", "2024-02", bars("2024-02", 10), complete=True)
    cache.write(
        "file",
        "ETH-USD",
        "1h",
        "2024-01",
        {**bars("2024-01", 1), "ts": np.array([month_bounds("2024-01")[0]])},
        complete=True,
    )
    cache.write("file", "ETH-USD", "1h", "2024-02", bars("2024-02", 1), complete=True)
    cache.path("file", "ETH-USD", "1h", "2024-02").write_bytes(b"garbage")
    entries = cache.entries()
    assert [(e.source, e.symbol, e.granularity) for e in entries] == [
        ("file", "ETH-USD", "1h"),
        ("synthetic", "BTC-USD", "1m"),
    ]
    eth, btc = entries
    assert btc.months == ["2024-02", "2024-03"] and btc.complete == [True, False]
    assert btc.rows == 10 + 97
    assert btc.first_ts == datetime(2024, 2, 1, tzinfo=UTC)
    assert btc.last_ts == datetime(2024, 3, 1, 1, 39, tzinfo=UTC)
    minutes_between = (29 * 24 * 60) + 99  # 2024-02-01 00:00 .. 2024-03-01 01:39
    assert btc.gaps == minutes_between + 1 - btc.rows
    assert eth.months == ["2024-01"] and eth.unreadable == ["2024-02"] and eth.gaps == 0
    assert cache.path("file", "ETH-USD", "1h", "2024-02").exists()  # listing never moves files
    assert CandleCache(cache.root / "nowhere").entries() == []
