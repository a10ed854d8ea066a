"""Bars for paper sessions: quotes aggregated into bars of the session's granularity, and the growing buffer the
strategies are evaluated on.

:class:`BarAggregator` buckets quotes by feed time (``ts // step``) and prices them at the mid. A quote in a later
bucket closes the bar in progress; buckets that saw no quote in between become flat bars at the previous close
(counted as *missed*, like gap-filled candles). A quote older than the bar in progress — a snapshot replayed after
a reconnect, a late REST answer — is counted and never reopens a bar, so a feed that drops and reconnects cannot
produce a bar twice.

:class:`BarBuffer` holds the candles a symbol's strategies see: warm-up history, then the session's bars, with a
fixed first bar (strategies' indicators depend on where a series starts, so the buffer never slides). In replay it
wraps the whole loaded window and reveals it bar by bar.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from backfarm.core.candles import COLUMNS, Candles


@dataclass(frozen=True)
class Bar:
    """One bar: open time (ns UTC) and OHLC; ``ticks`` quotes went into it, ``missed`` when none did."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    ticks: int = 0
    missed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bar:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class BarAggregator:
    """Quotes of one symbol → bars of ``step_ns``, starting with the bucket that opens at ``start_ns``."""

    def __init__(self, step_ns: int, start_ns: int, prev_close: float) -> None:
        self.step = step_ns
        self.next_ts = start_ns
        """Open time of the bar in progress (or of the next one, before its first quote)."""
        self.prev_close = prev_close
        self._open = self._high = self._low = self._close = float("nan")
        self._ticks = 0
        self.late = 0
        """Quotes that arrived after their bucket had closed (ignored)."""

    def add(self, price: float, time_ns: int) -> list[Bar]:
        """Feed one quote; returns the bars it closed (the bar in progress and any empty buckets before its own)."""
        bucket = time_ns - time_ns % self.step
        if bucket < self.next_ts:
            self.late += 1
            return []
        closed = self.close_until(bucket) if bucket > self.next_ts else []
        if self._ticks == 0:
            self._open = self._high = self._low = price
        else:
            self._high = max(self._high, price)
            self._low = min(self._low, price)
        self._close = price
        self._ticks += 1
        return closed

    def close_until(self, end_ns: int) -> list[Bar]:
        """Close every bar that opens before ``end_ns``: the one in progress, then flat bars for empty buckets."""
        bars: list[Bar] = []
        while self.next_ts < end_ns:
            if self._ticks:
                bar = Bar(self.next_ts, self._open, self._high, self._low, self._close, 0.0, self._ticks)
            else:
                c = self.prev_close
                bar = Bar(self.next_ts, c, c, c, c, 0.0, 0, True)
            bars.append(bar)
            self.prev_close = bar.close
            self.next_ts += self.step
            self._ticks = 0
        return bars


class BarBuffer:
    """The candles one symbol's strategies see: ``n`` bars from a fixed first bar, growing at the end."""

    def __init__(self, candles: Candles, visible: int | None = None, capacity: int = 0) -> None:
        self.source, self.symbol, self.granularity = candles.source, candles.symbol, candles.granularity
        size = max(len(candles), capacity)
        self._cols = {c: np.empty(size, dtype=np.int64 if c == "ts" else np.float64) for c in COLUMNS}
        for c in COLUMNS:
            self._cols[c][: len(candles)] = getattr(candles, c)
        self.known = len(candles)
        """Bars held in memory: all of a replayed window, only the closed ones live."""
        self.n = self.known if visible is None else visible
        """Bars the session has reached (closed)."""

    def __len__(self) -> int:
        return self.n

    def column(self, name: str) -> np.ndarray:
        """A column over every bar held (``known``), read-only for callers by convention."""
        return self._cols[name][: self.known]

    def append(self, bar: Bar) -> None:
        """Add a closed live bar at the end (doubling the arrays when full)."""
        if self.known == len(self._cols["ts"]):
            for c in COLUMNS:
                grown = np.empty(max(16, 2 * self.known), dtype=self._cols[c].dtype)
                grown[: self.known] = self._cols[c][: self.known]
                self._cols[c] = grown
        i = self.known
        self._cols["ts"][i] = bar.ts
        self._cols["open"][i] = bar.open
        self._cols["high"][i] = bar.high
        self._cols["low"][i] = bar.low
        self._cols["close"][i] = bar.close
        self._cols["volume"][i] = bar.volume
        self.known += 1
        self.n = self.known

    def candles(self, upto: int | None = None) -> Candles:
        """Bars ``[0, upto)`` (default: the bars reached) as ``Candles`` sharing this buffer's memory."""
        end = self.n if upto is None else upto
        c = self._cols
        return Candles(
            self.source, self.symbol, self.granularity, ts=c["ts"][:end], open=c["open"][:end],
            high=c["high"][:end], low=c["low"][:end], close=c["close"][:end], volume=c["volume"][:end],
        )  # fmt: skip

    def bar(self, i: int) -> tuple[int, float, float, float, float]:
        """(ts, open, high, low, close) of bar ``i``."""
        c = self._cols
        return int(c["ts"][i]), float(c["open"][i]), float(c["high"][i]), float(c["low"][i]), float(c["close"][i])
