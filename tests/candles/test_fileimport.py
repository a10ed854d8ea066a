"""Importing CSV and Parquet candles: parsing, validation messages, grid checks and merging into the cache."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backfarm._util.time import NS_PER_SECOND
from backfarm.candles.cache import CandleCache
from backfarm.candles.fileimport import import_file, read_table
from backfarm.candles.load import load_candles
from backfarm.candles.sources.file import FileSource
from backfarm.config import Settings
from backfarm.errors import DataError, ValidationError

T0 = 1704067200  # 2024-01-01 00:00:00 UTC
HOUR = 3600


def ns(seconds: int) -> int:
    return seconds * NS_PER_SECOND


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings().with_(data_dir=tmp_path / "data")


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_epoch_ms_sorted_and_deduplicated(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "time,open,high,low,close,volume\n"
        f"{(T0 + HOUR) * 1000},11,12,10,11.5,3\n"
        f"{T0 * 1000},10,11,9,10.5,2\n"
        f"{(T0 + HOUR) * 1000},11,12,10,11.5,3\n",  # exact duplicate: dropped
    )
    data = read_table(path)
    assert data["ts"].tolist() == [ns(T0), ns(T0 + HOUR)]
    assert data["open"].tolist() == [10.0, 11.0]
    assert data["close"].tolist() == [10.5, 11.5]
    assert data["volume"].tolist() == [2.0, 3.0]
    assert data["ts"].dtype == np.int64 and data["high"].dtype == np.float64


@pytest.mark.parametrize(
    ("stamp0", "stamp1"),
    [
        ("2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"),
        ("2024-01-01 00:00:00", "2024-01-01 01:00:00"),  # naive = UTC
        ("2024-01-01T01:00:00+01:00", "2024-01-01T02:00:00+01:00"),
        ("2024-01-01T00:00:00Z", "2024-01-01 01:00:00"),  # mixed styles take the slow path
        (str(T0), str(T0 + HOUR)),  # epoch seconds
        (str(T0 * 10**6), str((T0 + HOUR) * 10**6)),  # epoch microseconds
    ],
)
def test_csv_time_formats_and_aliases(tmp_path: Path, stamp0: str, stamp1: str) -> None:
    path = write(tmp_path, f"Timestamp, O ,H,L,Price,Vol\n{stamp0},1,2,0.5,1.5,7\n{stamp1},1.5,2,1,2,8\n")
    assert read_table(path)["ts"].tolist() == [ns(T0), ns(T0 + HOUR)]


def test_csv_date_only_is_midnight_utc(tmp_path: Path) -> None:
    path = write(tmp_path, "Date,Open,High,Low,Close,Volume\n2024-01-02,2,3,1,2,5\n2024-01-01,1,2,0.5,2,4\n")
    assert read_table(path)["ts"].tolist() == [ns(T0), ns(T0 + 24 * HOUR)]


def test_parquet_with_timestamps_and_with_epoch_ms(tmp_path: Path) -> None:
    stamps = pa.array([ns(T0), ns(T0 + HOUR)], pa.int64()).cast(pa.timestamp("ns"))  # naive Arrow timestamps
    values = {"open": [1.0, 2.0], "high": [2.0, 3.0], "low": [0.5, 1.5], "close": [2.0, 2.5], "volume": [1.0, 0.0]}
    pq.write_table(pa.table({"datetime": stamps, **values}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"open_time": [T0 * 1000, (T0 + HOUR) * 1000], **values}), tmp_path / "b.parquet")
    for name in ("a.parquet", "b.parquet"):
        data = read_table(tmp_path / name)
        assert data["ts"].tolist() == [ns(T0), ns(T0 + HOUR)]
        assert data["close"].tolist() == [2.0, 2.5]


HEADER = "time,open,high,low,close,volume\n"
GOOD = f"{T0},10,11,9,10,1\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "time,open,high,low,volume\n1,2,3,1,2\n",
            "data.csv: missing column 'close' (found: time, open, high, low, volume)",
        ),
        (f"{T0},1,2,0.5,1,1\n", "missing column 'ts' (found: "),  # no header line
        (HEADER + GOOD + f"{T0 + 60},10,10.0,11.0,10.5,1\n", "data.csv row 3: high 10.0 < low 11.0"),
        (HEADER + GOOD + GOOD + f"{T0 + 120},abc,11,9,10,1\n", "data.csv row 4 column 'open': non-numeric value 'abc'"),
        (HEADER + f"{T0},10,11,9,,1\n", "data.csv row 2 column 'close': empty value"),
        (HEADER + f"{T0},10,11,9,12,1\n", "data.csv row 2: high 11.0 < close 12.0"),
        (HEADER + f"{T0},10,11,9,10,-1\n", "data.csv row 2: volume must be a non-negative number, got -1.0"),
        (HEADER + f"{T0},0,11,0,10,1\n", "data.csv row 2: prices must be positive"),
        (HEADER + GOOD + f"{T0},10,11,9,10.5,1\n", "data.csv rows 2 and 3: duplicate time 2024-01-01 00:00:00 UTC"),
        (HEADER + GOOD + f"{(T0 + 60) * 1000},10,11,9,10,1\n", "data.csv row 3 column 'time': epoch time"),
        (HEADER + GOOD + "yesterday,10,11,9,10,1\n", "data.csv row 3 column 'time': cannot read time 'yesterday'"),
        (
            HEADER + GOOD + "2024-01-01T01:00:00,10,11,9,10,1\n",
            "data.csv row 3 column 'time': '2024-01-01T01:00:00' mixes",
        ),
        (HEADER, "data.csv: the file has no rows"),
    ],
)
def test_bad_csv_messages(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError) as err:
        read_table(write(tmp_path, text))
    assert message in str(err.value)


def test_headerless_file_gets_a_hint(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="the first line must be a header"):
        read_table(write(tmp_path, f"{T0},1,2,0.5,1,1\n"))


def test_unsupported_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.xlsx: unsupported file type '\.xlsx' \(use \.csv or \.parquet\)"):
        read_table(write(tmp_path, "x", "data.xlsx"))
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "absent.csv")
    with pytest.raises(DataError, match=r"bad\.parquet: cannot read as Parquet"):
        read_table(write(tmp_path, "not parquet", "bad.parquet"))


def hourly_csv(tmp_path: Path, start: int, hours: int, skip: tuple[int, ...] = (), price: float = 100.0) -> Path:
    lines = [HEADER.strip()]
    for h in range(hours):
        if h not in skip:
            lines.append(f"{(start + h * HOUR) * 1000},{price},{price + 1},{price - 1},{price + 0.5},5")
    return write(tmp_path, "\n".join(lines) + "\n", f"candles-{start}-{price}.csv")


def test_import_writes_monthly_partitions(tmp_path: Path, settings: Settings) -> None:
    start = T0 - 2 * HOUR  # 2023-12-31 22:00 → spans two months
    report = import_file(settings, hourly_csv(tmp_path, start, 10, skip=(4, 5)), "BTC-USD", "1h")
    assert report.rows == 8 and report.gaps == 2
    assert report.months == ["2023-12", "2024-01"]
    assert report.first == datetime(2023, 12, 31, 22, tzinfo=UTC)
    assert report.last == datetime(2024, 1, 1, 7, tzinfo=UTC)
    cache = CandleCache(settings.candles_dir)
    dec, jan = (cache.read("file", "BTC-USD", "1h", m) for m in report.months)
    assert dec is not None and jan is not None
    assert dec.meta.rows == 2 and jan.meta.rows == 6 and dec.meta.complete


def test_import_merges_with_cached_rows(tmp_path: Path, settings: Settings) -> None:
    import_file(settings, hourly_csv(tmp_path, T0, 5), "ETH-USD", "1h")
    import_file(settings, hourly_csv(tmp_path, T0 + 3 * HOUR, 4, price=200.0), "ETH-USD", "1h")
    part = CandleCache(settings.candles_dir).read("file", "ETH-USD", "1h", "2024-01")
    assert part is not None
    assert part.arrays["ts"].tolist() == [ns(T0 + h * HOUR) for h in range(7)]
    assert part.arrays["open"].tolist() == [100.0] * 3 + [200.0] * 4  # the newer file wins where both have bars


def test_import_checks_the_grid(tmp_path: Path, settings: Settings) -> None:
    path = write(tmp_path, HEADER + f"{T0 + 120},10,11,9,10,1\n{T0 + 60},10,11,9,10,1\n{T0 + 90},10,11,9,10,1\n")
    with pytest.raises(DataError, match=r"data\.csv row 2: time 2024-01-01 00:02:00 UTC is not on the 1h grid"):
        import_file(settings, path, "BTC-USD", "1h")
    with pytest.raises(DataError, match=r"data\.csv row 4: time 2024-01-01 00:01:30 UTC is not on the 1m grid"):
        import_file(settings, path, "BTC-USD", "1m")
    with pytest.raises(ValidationError, match="granularity"):
        import_file(settings, path, "BTC-USD", "7m")
    with pytest.raises(ValidationError, match="BASE-QUOTE"):
        import_file(settings, path, "btc/usd", "1m")
    assert not settings.candles_dir.exists()  # nothing written by failed imports


def test_import_refuses_a_file_of_another_bar_size(tmp_path: Path, settings: Settings) -> None:
    """An hourly file imported as 5m (or 1m) is refused in one line that says what the file holds; a 5m file with
    missing bars is still a 5m file."""
    path = hourly_csv(tmp_path, T0, 30)
    for granularity in ("5m", "1m", "30m"):
        with pytest.raises(DataError, match=f"the file holds 1h bars \\(most are 3,600 s apart\\), not {granularity}: "
                                            "import it with --granularity 1h"):  # fmt: skip
            import_file(settings, path, "BTC-USD", granularity)
    assert not settings.candles_dir.exists()
    odd = write(tmp_path, HEADER + "".join(f"{T0 + i * 420},10,11,9,10,1\n" for i in range(10)))  # every 7 minutes
    with pytest.raises(DataError, match="the file holds bars 420 s apart \\(most are 420 s apart\\), not 1m$"):
        import_file(settings, odd, "BTC-USD", "1m")
    sparse = write(tmp_path, HEADER + "".join(f"{T0 + m * 300},10,11,9,10,1\n" for m in (0, 1, 2, 3, 5, 9, 10, 11)))
    assert import_file(settings, sparse, "BTC-USD", "5m").gaps == 4  # bars 4, 6, 7 and 8 missing


def test_file_source(tmp_path: Path, settings: Settings) -> None:
    source = FileSource(CandleCache(settings.candles_dir))
    assert source.name == "file" and source.can_fetch is False
    with pytest.raises(DataError, match=r"backfarm data import PATH --symbol BTC-USD --granularity 1h"):
        source.fetch("BTC-USD", "1h", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
    with pytest.raises(ValidationError, match="no candles imported for 'BTC-USD'"):
        source.validate_symbol("BTC-USD")
    import_file(settings, hourly_csv(tmp_path, T0, 3), "BTC-USD", "1h")
    source.validate_symbol("BTC-USD")
    with pytest.raises(ValidationError, match=r"did you mean 'BTC-USD'\?.*backfarm data import"):
        source.validate_symbol("BTC-USDT")
    FileSource().validate_symbol("ANY-USD")  # without a cache only the shape is checked


def test_imported_candles_load_with_gaps_filled(tmp_path: Path, settings: Settings) -> None:
    import_file(settings, hourly_csv(tmp_path, T0, 24, skip=(10,)), "SOL-USD", "1h")
    candles = load_candles(
        settings, "file", "SOL-USD", "1h", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
    )
    assert candles.source == "file" and len(candles) == 24 and candles.gaps == 1
    assert candles.volume[10] == 0.0 and candles.open[10] == candles.close[9] == 100.5
