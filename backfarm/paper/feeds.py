"""Feeds: where a session's quotes and bars come from, behind one interface.

A feed yields, in causal order, :class:`~backfarm.paper.broker.Tick` (a quote: fill pending orders at it),
:class:`BarClosed` (a bar of one symbol is complete: evaluate the strategies) and :class:`Idle` (nothing happened
for a moment: a chance to look at stop requests and renew the lease). It ends after the last bar of the window,
which it marks ``last``; :meth:`finish` makes the bars in progress the last ones (``paper stop``).

- :class:`ReplayFeed` replays loaded candles: at each bar, first the quote — its open with the engine's spread —
  then the bar itself. ``speed`` paces it against the wall clock (``None``: as fast as possible).
- :class:`LiveFeed` runs :class:`~backfarm.coinbase.feed.QuoteFeed` (Coinbase WebSocket ticker with reconnects and
  REST fallback) in a thread and aggregates its quotes into bars by the exchange's timestamps
  (:class:`~backfarm.paper.bars.BarAggregator`, so a reconnect cannot duplicate a bar). The session clock is the
  feed's: the window starts with the bar of the first quote, and a quiet feed is extrapolated from the last quote
  at the rate the feed's time has been running (a simulator may run faster than the wall clock).
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from backfarm._util.time import NS_PER_SECOND
from backfarm.coinbase.quotes import Quote
from backfarm.errors import ServiceUnavailable
from backfarm.paper.bars import Bar, BarAggregator, BarBuffer
from backfarm.paper.broker import Broker, Tick

log = logging.getLogger(__name__)

IDLE_S = 0.25
"""Longest wait without an event, so stop requests and lease renewal are never far away."""
FIRST_QUOTE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class BarClosed:
    """Bar ``index`` of the session window closed for ``symbol``; ``last`` when the session ends with it."""

    symbol: str
    index: int
    bar: Bar
    last: bool


@dataclass(frozen=True)
class Idle:
    """Nothing happened for a moment."""


Event = Tick | BarClosed | Idle


class Feed(Protocol):
    """What a session reads its market from."""

    def events(self) -> Iterator[Event]:
        """Quotes, closed bars and idle beats until the window ends."""
        ...

    def finish(self) -> None:
        """End early: the bars in progress become the last ones."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters for the status view."""
        ...

    def close(self) -> None:
        """Stop any background work."""
        ...


class ReplayFeed:
    """Cached candles replayed bar by bar: each bar's open as a quote, then the bar (see the module docstring)."""

    def __init__(
        self,
        buffers: dict[str, BarBuffer],
        offsets: dict[str, int],
        lengths: dict[str, int],
        broker: Broker,
        step_ns: int,
        speed: float | None,
        start_index: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.buffers = buffers
        self.offsets = offsets
        """Buffer index of each symbol's first session bar (the warm-up length)."""
        self.lengths = lengths
        """Session bars per symbol."""
        self.broker = broker
        self.step = step_ns
        self.speed = speed
        self.start_index = start_index
        self._sleep = sleep
        self._finish = False
        self.bars = 0

    def finish(self) -> None:
        self._finish = True

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"bars": self.bars, "speed": self.speed or "max"}

    def events(self) -> Iterator[Event]:
        total = max(self.lengths.values(), default=0)
        wall0 = time.monotonic()
        first_ts = None
        for i in range(self.start_index, total):
            live = [s for s in self.buffers if i < self.lengths[s]]
            if first_ts is None:
                first_ts = self.buffers[live[0]].bar(self.offsets[live[0]] + i)[0]
            for symbol in live:
                ts, o, _, _, _ = self.buffers[symbol].bar(self.offsets[symbol] + i)
                if self.speed is not None:
                    yield from self._pace(wall0, ts - first_ts)
                yield self.broker.replay_tick(symbol, o, ts)
            last_bar = self._finish or i == total - 1
            for symbol in live:
                ts, o, h, lo, c = self.buffers[symbol].bar(self.offsets[symbol] + i)
                if self.speed is not None:
                    yield from self._pace(wall0, ts + self.step - first_ts)
                yield BarClosed(symbol, i, Bar(ts, o, h, lo, c), last_bar or i == self.lengths[symbol] - 1)
            self.bars += 1
            if last_bar:
                return

    def _pace(self, wall0: float, market_ns: int) -> Iterator[Event]:
        """Wait until ``market_ns`` of market time has passed at ``speed`` (idle beats while waiting)."""
        assert self.speed is not None
        due = wall0 + market_ns / NS_PER_SECOND / self.speed
        while not self._finish:
            left = due - time.monotonic()
            if left <= 0:
                return
            self._sleep(min(left, IDLE_S))
            if left > IDLE_S:
                yield Idle()


class QuoteSource(Protocol):
    """What :class:`LiveFeed` needs from :class:`~backfarm.coinbase.feed.QuoteFeed`."""

    def start(self, callback: Callable[[Quote], None]) -> Any: ...

    def stop(self, timeout: float = 5.0) -> None: ...


class LiveFeed:
    """Live quotes aggregated into bars of ``step_ns`` over the window ``[start_ns, end_ns)``."""

    def __init__(self, quotes: QuoteSource, symbols: Sequence[str], step_ns: int, bars_in_window: int) -> None:
        self.source = quotes
        self.symbols = list(symbols)
        self.step = step_ns
        self.window_bars = bars_in_window
        self.start_ns = 0
        self.end_ns = 0
        self._queue: queue.Queue[Quote] = queue.Queue()
        self._aggs: dict[str, BarAggregator] = {}
        self._finish = False
        self._started = False
        self._first: tuple[float, int] | None = None
        self._head: tuple[float, int] | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def connect(self, timeout_s: float = FIRST_QUOTE_TIMEOUT_S) -> int:
        """Start the quote thread and wait for the first quote; returns its bar's open time (ns)."""
        if not self._started:
            self.source.start(self._queue.put)
            self._started = True
        try:
            first = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            raise ServiceUnavailable(f"no quote arrived within {timeout_s:.0f} s from the live feed") from None
        self._queue.put(first)  # it is also the first quote of the session
        tick = Tick.from_quote(first)
        return tick.time_ns - tick.time_ns % self.step

    def begin(self, start_ns: int, resume_from: dict[str, tuple[int, float]]) -> None:
        """Fix the window and where each symbol's bars continue: ``{symbol: (next bar ts, previous close)}``."""
        self.start_ns = start_ns
        self.end_ns = start_ns + self.window_bars * self.step
        self._aggs = {s: BarAggregator(self.step, *resume_from[s]) for s in self.symbols}

    def finish(self) -> None:
        self._finish = True

    def close(self) -> None:
        if self._started:
            self.source.stop()
            self._started = False

    def stats(self) -> dict[str, Any]:
        feed_stats = getattr(self.source, "stats", None)
        counters = dict(vars(feed_stats)) if feed_stats is not None else {}
        counters["late_quotes"] = sum(a.late for a in self._aggs.values())
        counters["mode"] = getattr(self.source, "mode", "ws")
        return counters

    # --- the clock -----------------------------------------------------------------------------------------------

    @property
    def head_ns(self) -> int:
        """The newest feed time seen (0 before any quote)."""
        return self._head[1] if self._head else 0

    def now_ns(self) -> int:
        """The feed's time now: the newest quote's, run forward at the rate feed time has been advancing."""
        if self._head is None or self._first is None:
            return 0
        wall, head = self._head
        wall0, first = self._first
        rate = (head - first) / NS_PER_SECOND / (wall - wall0) if wall - wall0 > 2.0 else 1.0
        return head + int((time.time() - wall) * max(rate, 1.0) * NS_PER_SECOND)

    def _see(self, tick: Tick) -> None:
        now = time.time()
        if self._first is None:
            self._first = (now, tick.time_ns)
        if self._head is None or tick.time_ns > self._head[1]:
            self._head = (now, tick.time_ns)

    # --- events --------------------------------------------------------------------------------------------------

    def index(self, bar: Bar) -> int:
        """Session bar index of ``bar``."""
        return (bar.ts - self.start_ns) // self.step

    def events(self) -> Iterator[Event]:
        while True:
            if self._finish or (self._head is not None and self.now_ns() >= self.end_ns):
                yield from self._close_all(self._stop_at())
                return
            try:
                quote = self._queue.get(timeout=IDLE_S)
            except queue.Empty:
                yield Idle()
                continue
            if quote.product not in self._aggs:
                continue
            tick = Tick.from_quote(quote)
            self._see(tick)
            if tick.time_ns >= self.end_ns:
                yield from self._close_all(self.end_ns)
                return
            for bar in self._aggs[tick.symbol].add(tick.ref, tick.time_ns):
                yield BarClosed(tick.symbol, self.index(bar), bar, False)
            yield tick

    def _stop_at(self) -> int:
        """Where the window ends now: its planned end, or (stopping early) after the bar in progress."""
        if not self._finish:
            return self.end_ns
        head = max(self.head_ns, self.start_ns)
        return min(self.end_ns, head - head % self.step + self.step)

    def _close_all(self, end_ns: int) -> Iterator[Event]:
        """Close every symbol's bars up to ``end_ns``; each symbol's final bar is ``last``."""
        for symbol, agg in self._aggs.items():
            bars = agg.close_until(end_ns)
            if not bars and agg.next_ts < self.end_ns:  # stopped before this symbol's next bar began
                bars = agg.close_until(agg.next_ts + self.step)
            if not bars:
                log.warning("%s: the window ended with no bar left to close", symbol)
            for k, bar in enumerate(bars):
                yield BarClosed(symbol, self.index(bar), bar, k == len(bars) - 1)
