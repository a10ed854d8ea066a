"""Bars from a source are checked before they are cached: a payload is either cached whole and valid, or refused
with nothing of its month cached (so the month is fetched again, never served poisoned)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backfarm._util.time import NS_PER_SECOND, to_ns
from backfarm.candles.cache import CandleCache
from backfarm.candles.checks import first_bad_bar
from backfarm.candles.load import ensure_cached
from backfarm.config import Settings
from backfarm.core.candles import COLUMNS
from backfarm.errors import BadSourceData

HOUR_NS = 3600 * NS_PER_SECOND
START = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 3, 2, tzinfo=UTC)
NOW = datetime(2024, 6, 1, tzinfo=UTC)  # March is long over: a cached March is complete


class Payload:
    """A source that answers with the bars it is given (as a network source would, whatever they hold)."""

    name = "coinbase"
    can_fetch = True

    def __init__(self, bars: dict[str, np.ndarray]) -> None:
        self.bars = bars

    def fetch(self, symbol: str, granularity: str, start: datetime, end: datetime) -> dict[str, np.ndarray]:
        return self.bars

    def validate_symbol(self, symbol: str) -> None:
        return None


def good_bars(n: int = 24) -> dict[str, np.ndarray]:
    ts = to_ns(START) + np.arange(n, dtype=np.int64) * HOUR_NS
    close = 100.0 + np.arange(n, dtype=np.float64)
    return {"ts": ts, "open": close - 0.5, "high": close + 1.0, "low": close - 1.0, "close": close,
            "volume": np.full(n, 3.0)}  # fmt: skip


def fetch(tmp_path: Path, bars: dict[str, np.ndarray]) -> CandleCache:
    ensure_cached(Settings(data_dir=tmp_path), Payload(bars), "BTC-USD", "1h", START, END, now=NOW)  # type: ignore[arg-type]
    return CandleCache(tmp_path / "candles")


def test_good_bars_are_cached_complete(tmp_path: Path) -> None:
    cache = fetch(tmp_path, good_bars())
    part = cache.read("coinbase", "BTC-USD", "1h", "2024-03")
    assert part is not None and part.meta.complete and part.meta.rows == 24


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("close", np.nan, "prices must be positive and finite"),
        ("low", -1.0, "prices must be positive and finite"),
        ("high", np.inf, "prices must be positive and finite"),
        ("high", 50.0, "high 50.0 < low"),
        ("volume", -2.0, "volume must be a non-negative number, got -2.0"),
        ("volume", np.nan, "volume must be a non-negative number, got nan"),
        ("ts", 7, "off the 3600 s grid"),
    ],
)
def test_a_bad_bar_caches_nothing_and_the_month_is_fetched_again(
    tmp_path: Path, column: str, value: float, message: str
) -> None:
    bars = good_bars()
    bars[column] = bars[column].copy()
    bars[column][5] = bars[column][5] + value if column == "ts" else value
    with pytest.raises(BadSourceData, match=message) as refused:
        fetch(tmp_path, bars)
    assert "coinbase BTC-USD 1h 2024-03" in str(refused.value) and refused.value.exit_code == 3
    cache = CandleCache(tmp_path / "candles")
    assert cache.meta("coinbase", "BTC-USD", "1h", "2024-03") is None  # not cached, so not complete
    fetch(tmp_path, good_bars())  # the next run fetches the month again
    assert cache.read("coinbase", "BTC-USD", "1h", "2024-03") is not None


def test_two_different_bars_for_one_time_are_reported_and_alike_ones_kept_once(tmp_path: Path) -> None:
    bars = good_bars()
    twice = {c: np.concatenate([v, v[3:4]]) for c, v in bars.items()}  # the same bar sent again
    part = fetch(tmp_path, twice).read("coinbase", "BTC-USD", "1h", "2024-03")
    assert part is not None and part.meta.rows == 24
    conflicting = {c: np.concatenate([v, v[3:4]]) for c, v in bars.items()}
    conflicting["close"][-1] += 0.25
    with pytest.raises(BadSourceData, match="two different bars for 2024-03-01 03:00"):
        fetch(tmp_path / "other", conflicting)


_bar = st.tuples(
    st.integers(0, 30),  # hour of the month
    st.sampled_from([0, 0, 0, 0, 1, 1800]),  # seconds off the hour (mostly none)
    st.floats(min_value=10.0, max_value=1e6),  # price
    st.floats(min_value=0.0, max_value=5.0),  # high above it
    st.floats(min_value=0.0, max_value=5.0),  # low below it
    st.floats(min_value=0.0, max_value=1e9),  # volume
    st.sampled_from([None, None, None, None, "open", "high", "low", "close", "volume"]),  # a column to spoil
    st.sampled_from([float("nan"), float("inf"), -1.0, 0.0, 1e7]),  # how
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_bar, min_size=1, max_size=40))
def test_any_payload_is_cached_valid_or_refused_with_nothing_cached(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple],  # type: ignore[type-arg]
) -> None:
    where = tmp_path_factory.mktemp("payload")
    bars: dict[str, list[float]] = {c: [] for c in COLUMNS}
    for hour, off, price, up, down, volume, spoil, how in rows:
        bar = {"ts": to_ns(START) + hour * HOUR_NS + off * NS_PER_SECOND, "open": price, "high": price + up,
               "low": price - down, "close": price, "volume": volume}  # fmt: skip
        if spoil is not None:
            bar[spoil] = how
        for c in COLUMNS:
            bars[c].append(bar[c])
    payload = {c: np.array(v, dtype=np.int64 if c == "ts" else np.float64) for c, v in bars.items()}
    cache = CandleCache(where / "candles")
    try:
        fetch(where, payload)
    except BadSourceData:
        assert cache.meta("coinbase", "BTC-USD", "1h", "2024-03") is None
        return
    part = cache.read("coinbase", "BTC-USD", "1h", "2024-03")
    assert part is not None
    stored = part.arrays
    assert first_bad_bar(stored) is None
    assert np.all(stored["ts"] % HOUR_NS == 0) and np.all(np.diff(stored["ts"]) > 0)
    sent = {int(t) for t in payload["ts"]}
    assert set(stored["ts"].tolist()) <= sent  # nothing invented
