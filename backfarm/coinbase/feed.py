"""Live quotes from the Coinbase Advanced Trade WebSocket, with REST polling as the fallback (reference §4).

``QuoteFeed`` connects, sends one subscribe message per channel (``ticker`` for the products, ``heartbeats`` to keep
the socket alive; a fresh JWT in each when a key is configured) and yields :class:`Quote` objects. It watches
``sequence_num`` (a jump is a gap: reported, then the ticker is resubscribed for a fresh snapshot; an old number is
dropped), treats silence longer than ``stale_after`` as a dead feed, and reconnects after drops with capped,
jittered exponential backoff — forever, until stopped. While the socket keeps failing it polls REST best bid/ask
instead. A quote identical to the last one for its product (e.g. the snapshot after a reconnect) is not repeated.

Use it as an iterator (``for q in feed.quotes(duration=60): ...``), or with a callback in a thread
(``feed.start(callback)`` … ``feed.stop()``).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import websockets
from websockets.sync.client import ClientConnection, connect

from backfarm.coinbase.auth import CdpKey
from backfarm.coinbase.client import CoinbaseClient
from backfarm.coinbase.quotes import Quote, now_utc, num, parse_time
from backfarm.config import Settings
from backfarm.errors import AuthError, ConfigError, TemporaryError

log = logging.getLogger(__name__)

MAX_FRAME = 10 * 1024 * 1024
_POLL_SLICE = 0.25
"""Longest single wait, so ``stop()`` and ``duration`` take effect promptly."""


@dataclass(frozen=True)
class FeedEvent:
    """Something the feed noticed: ``connected``, ``subscribed``, ``disconnected``, ``stale``, ``gap``,
    ``resubscribed``, ``fallback``, ``error``."""

    kind: str
    detail: str
    at: datetime = field(default_factory=now_utc)


@dataclass
class FeedStats:
    """Counters for monitoring and tests."""

    connects: int = 0
    disconnects: int = 0
    stale: int = 0
    gaps: int = 0
    messages: int = 0
    heartbeats: int = 0
    quotes: int = 0
    duplicates: int = 0
    """Quotes not repeated because nothing changed (snapshots after reconnects or resubscribes)."""
    out_of_order: int = 0
    polls: int = 0
    """REST polling rounds while the WebSocket was down."""


class _Stale(Exception):
    """No message arrived within ``stale_after``."""


class QuoteFeed:
    """Quotes for ``products`` from ``ws_url``; REST fallback through ``rest`` when given."""

    def __init__(
        self,
        ws_url: str,
        products: Iterable[str],
        *,
        key: CdpKey | None = None,
        rest: CoinbaseClient | None = None,
        stale_after: float = 10.0,
        connect_timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        fallback_after: int = 2,
        poll_interval: float = 1.0,
        on_event: Callable[[FeedEvent], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.ws_url = ws_url
        self.products = list(dict.fromkeys(products))
        if not self.products:
            raise ConfigError("the quote feed needs at least one product")
        self.key = key
        self.rest = rest
        self.stale_after = stale_after
        self.connect_timeout = connect_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.fallback_after = fallback_after
        self.poll_interval = poll_interval
        self.on_event = on_event
        self.stats = FeedStats()
        self.events: deque[FeedEvent] = deque(maxlen=200)
        self.mode = "ws"
        """``ws`` while the socket delivers, ``rest`` while polling."""
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._last: dict[str, Quote] = {}
        self._thread: threading.Thread | None = None
        self._attempts = 0
        self._healthy = False

    def __repr__(self) -> str:
        return f"QuoteFeed({self.ws_url!r}, {self.products!r})"

    @classmethod
    def from_settings(cls, settings: Settings, products: Iterable[str], **kwargs: Any) -> QuoteFeed:
        """A feed on ``settings.coinbase_ws_url`` with the configured key and a REST client for the fallback."""
        rest = kwargs.pop("rest", None)
        key = rest.key if rest is not None else CdpKey.from_settings(settings)  # parse the key once
        rest = rest or CoinbaseClient(settings.coinbase_api_url, key)
        return cls(settings.coinbase_ws_url, products, key=key, rest=rest, **kwargs)

    # ----------------------------------------------------------------------------------------------- public API

    def __iter__(self) -> Iterator[Quote]:
        return self.quotes()

    def quotes(self, duration: float | None = None) -> Iterator[Quote]:
        """Yield quotes until ``duration`` seconds pass or :meth:`stop` is called; reconnects as needed."""
        if self._thread is None:
            self._stop.clear()  # a new foreground run (start() clears it for the background one)
        deadline = None if duration is None else time.monotonic() + duration
        failures = 0
        while not self._done(deadline):
            self._healthy = False
            try:
                yield from self._session(deadline)
                if self._done(deadline):
                    return
                self._event("disconnected", "server closed the connection")
            except _Stale:
                self.stats.stale += 1
                self._event("stale", f"no message for {self.stale_after:g} s; reconnecting")
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                self._event("disconnected", _describe(exc))
            self.stats.disconnects += 1
            # A connection that delivered data resets the backoff; one that never did keeps growing it.
            failures = 1 if self._healthy else failures + 1
            yield from self._pause(failures, deadline)

    def run(self, callback: Callable[[Quote], None], duration: float | None = None) -> None:
        """Call ``callback`` for every quote, in this thread, until ``duration`` passes or :meth:`stop`."""
        for quote in self.quotes(duration):
            callback(quote)

    def start(self, callback: Callable[[Quote], None]) -> threading.Thread:
        """Run the feed in a daemon thread, calling ``callback`` per quote; :meth:`stop` ends it."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(callback,), name="coinbase-feed", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the feed to end; waits for the background thread (if any)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            self._thread = None

    # ---------------------------------------------------------------------------------------------- WebSocket

    def _session(self, deadline: float | None) -> Iterator[Quote]:
        """One connection: subscribe, then read until it closes, goes stale, or the feed is stopped."""
        headers = {"x-cb-retry-counter": str(self._attempts)} if self._attempts else None
        self._attempts += 1
        try:
            ws = connect(
                self.ws_url,
                open_timeout=self.connect_timeout,
                close_timeout=1.0,
                max_size=MAX_FRAME,
                additional_headers=headers,
                user_agent_header="backfarm",
            )
        except websockets.exceptions.InvalidURI:
            raise ConfigError(f"invalid Coinbase WebSocket URL {self.ws_url!r}") from None
        with ws:
            self.stats.connects += 1
            self.mode = "ws"
            self._event("connected", self.ws_url)
            self._subscribe(ws, "ticker", self.products)
            self._subscribe(ws, "heartbeats", [])
            yield from self._read(ws, deadline)

    def _subscribe(self, ws: ClientConnection, channel: str, products: list[str], kind: str = "subscribe") -> None:
        message: dict[str, Any] = {"type": kind, "product_ids": products, "channel": channel}
        if self.key is not None:
            message["jwt"] = self.key.ws_jwt()
        ws.send(json.dumps(message))

    def _read(self, ws: ClientConnection, deadline: float | None) -> Iterator[Quote]:
        last_seq: int | None = None
        last_message = time.monotonic()
        while not self._done(deadline):
            silence = time.monotonic() - last_message
            if silence >= self.stale_after:
                raise _Stale()
            try:
                raw = ws.recv(timeout=min(self.stale_after - silence, _POLL_SLICE))
            except TimeoutError:
                continue
            last_message = time.monotonic()
            try:
                msg = json.loads(raw)
            except ValueError:
                self._event("error", "malformed message ignored")
                continue
            if not isinstance(msg, dict):
                continue
            if msg.get("type") == "error":
                self._server_error(str(msg.get("message", "")))
                continue
            seq = msg.get("sequence_num")
            if isinstance(seq, int):
                if last_seq is not None and seq <= last_seq:
                    self.stats.out_of_order += 1
                    continue  # older than what we have: stale duplicate
                if last_seq is not None and seq > last_seq + 1:
                    self._gap(ws, last_seq, seq)
                last_seq = seq
            self.stats.messages += 1
            self._healthy = True
            yield from self._dispatch(msg)

    def _gap(self, ws: ClientConnection, last_seq: int, seq: int) -> None:
        self.stats.gaps += 1
        self._event("gap", f"sequence gap: expected {last_seq + 1}, got {seq} ({seq - last_seq - 1} missed)")
        # A fresh snapshot replaces whatever was missed (reference §4.2).
        self._subscribe(ws, "ticker", self.products, "unsubscribe")
        self._subscribe(ws, "ticker", self.products)
        self._event("resubscribed", "ticker")

    def _server_error(self, message: str) -> None:
        if "authentication" in message.lower():
            raise AuthError("Coinbase WebSocket authentication failed (check key name and key)")
        self._event("error", message or "unspecified error")

    def _dispatch(self, msg: dict[str, Any]) -> Iterator[Quote]:
        channel = msg.get("channel")
        if channel in ("ticker", "ticker_batch"):
            exchange_time = parse_time(msg.get("timestamp"))
            for event in msg.get("events") or []:
                tickers = (event.get("tickers") or []) if isinstance(event, dict) else []
                for ticker in tickers:
                    quote = _ticker_quote(ticker, exchange_time)
                    if quote is not None and self._fresh(quote):
                        yield quote
        elif channel == "heartbeats":
            self.stats.heartbeats += 1
        elif channel == "subscriptions":
            subs = [e.get("subscriptions") for e in msg.get("events") or [] if isinstance(e, dict)]
            self._event("subscribed", json.dumps(subs[0] if subs else {}, sort_keys=True))

    # ------------------------------------------------------------------------------------------ backoff and REST

    def _pause(self, failures: int, deadline: float | None) -> Iterator[Quote]:
        """Wait before reconnecting; poll REST meanwhile once the socket has failed ``fallback_after`` times."""
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (failures - 1)) * self._rng.uniform(0.5, 1.0)
        until = time.monotonic() + delay
        if self.rest is None or failures < self.fallback_after:
            self._wait_until(until, deadline)
            return
        if self.mode != "rest":
            self.mode = "rest"
            self._event("fallback", f"WebSocket down ({failures} failures): polling REST best bid/ask")
        while not self._done(deadline):
            self.stats.polls += 1
            try:
                fetched = self.rest.quotes(self.products)
            except TemporaryError as exc:
                self._event("error", f"REST fallback: {exc}")
                fetched = []
            for quote in fetched:
                if self._fresh(quote):
                    yield quote
            if time.monotonic() + self.poll_interval >= until:
                break
            self._wait_until(time.monotonic() + self.poll_interval, deadline)
        self._wait_until(until, deadline)

    def _wait_until(self, until: float, deadline: float | None) -> None:
        if deadline is not None:
            until = min(until, deadline)
        remaining = until - time.monotonic()
        if remaining > 0:
            self._stop.wait(remaining)

    # ------------------------------------------------------------------------------------------------- helpers

    def _done(self, deadline: float | None) -> bool:
        return self._stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

    def _fresh(self, quote: Quote) -> bool:
        """Count and remember ``quote``; False when it repeats the product's last quote."""
        if quote.same_prices(self._last.get(quote.product)):
            self.stats.duplicates += 1
            return False
        self._last[quote.product] = quote
        self.stats.quotes += 1
        return True

    def _event(self, kind: str, detail: str) -> None:
        event = FeedEvent(kind, detail)
        self.events.append(event)
        log.info("coinbase feed %s: %s", kind, detail)
        if self.on_event is not None:
            self.on_event(event)


def _ticker_quote(ticker: Any, exchange_time: datetime | None) -> Quote | None:
    """A ``Quote`` from one ticker object; ``None`` for the all-empty tickers ``ticker_batch`` sometimes sends."""
    if not isinstance(ticker, dict) or not ticker.get("product_id"):
        return None
    return Quote(
        product=str(ticker["product_id"]),
        bid=num(ticker.get("best_bid")),
        ask=num(ticker.get("best_ask")),
        bid_size=num(ticker.get("best_bid_quantity")),
        ask_size=num(ticker.get("best_ask_quantity")),
        last=num(ticker.get("price")),
        exchange_time=exchange_time,
        receive_time=now_utc(),
        source="ws",
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, websockets.exceptions.ConnectionClosed):
        return f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
