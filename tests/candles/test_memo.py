"""The candle memo keeps windows and their indicators within its byte budget, counting what they really hold."""

from __future__ import annotations

from pathlib import Path

from backfarm.candles.memo import CandleMemo
from backfarm.config import Settings
from backfarm.core.jobs import DataKey

WINDOWS: list[DataKey] = [
    ("synthetic", symbol, "1m", "2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z") for symbol in ("BTC-USD", "ETH-USD")
]


def test_indicators_count_and_the_least_recent_window_goes_first(tmp_path: Path) -> None:
    memo = CandleMemo(Settings(data_dir=tmp_path), max_bytes=2**40)
    candles, indicators = memo.get(WINDOWS[0])
    bare = memo.nbytes
    assert bare == sum(getattr(candles, c).nbytes for c in ("ts", "open", "high", "low", "close", "volume"))
    for w in (5, 10, 20, 40):
        indicators.sma(w)
        indicators.stdev(w)
    assert memo.nbytes == bare + indicators.nbytes and indicators.nbytes >= 8 * len(candles) * 8
    memo.max_bytes = memo.nbytes + bare  # room for the first window with its indicators and a bare second one
    memo.get(WINDOWS[1])
    assert memo.get(WINDOWS[0])[1] is indicators  # both fit: the first is kept, with what it computed
    memo.get(WINDOWS[1])[1].sma(5)  # the second grows past the budget ...
    memo.max_bytes -= 1
    memo.get(("synthetic", "SOL-USD", "1m", "2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z"))
    assert WINDOWS[0] not in memo._entries  # ... so the least recently used goes when the next one comes
    assert memo.nbytes <= memo.max_bytes or len(memo._entries) == 1
