"""The simulator's WebSocket feed: Advanced Trade envelopes, subscriptions, ticker, heartbeats, candles (§4).

One channel per subscribe message; the confirmation arrives on ``subscriptions``; ``sequence_num`` counts every data
message of a connection from 0; the first ticker message after a subscribe is a ``snapshot``. A socket without a
subscription after ``subscribe_deadline`` is closed. A ``jwt`` field, when present, must verify (else
``{"type":"error","message":"authentication failure"}``). Faults: drop the connection, skip a sequence number, or
go silent after N messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from backfarm.simulator.keys import Unauthorized
from backfarm.simulator.market import SimProduct
from backfarm.simulator.rest import STATE, dumps, fmt
from backfarm.simulator.state import SimState

CHANNELS = ("ticker", "heartbeats", "candles")
NO_PRODUCT_CHANNELS = ("heartbeats",)
AUTH_CHANNELS = ("user", "futures_balance_summary")
CONNECTIONS: web.AppKey[set[Connection]] = web.AppKey("connections", set)
_TICKER_KEYS = ("price", "best_bid", "best_ask", "best_bid_quantity", "best_ask_quantity")


def timestamp(t: float) -> str:
    """RFC 3339 with nanoseconds and ``Z`` (``2023-02-09T20:30:37.167359596Z``)."""
    seconds = math.floor(t)
    nanos = int(round((t - seconds) * 1e9))
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{min(nanos, 999_999_999):09d}Z"


class Connection:
    """One WebSocket client: its subscriptions, sequence counter and fault state."""

    def __init__(self, state: SimState, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.state = state
        self.ws = ws
        self.request = request
        self.subs: dict[str, set[str]] = {}
        self.seq = 0
        self.sent = 0
        self.heartbeats = 0
        self.skipped = False
        self.faulty = state.faults.take_ws_fault_slot()
        self.last_ticker: dict[str, tuple[float, ...]] = {}
        self.lock = asyncio.Lock()
        self.closed = False

    async def send(self, channel: str, events: list[dict[str, Any]], t: float | None = None) -> None:
        """Send one enveloped message (applying the drop/skip/silent faults)."""
        async with self.lock:
            if self.closed:
                return
            f = self.state.faults
            if self.faulty and f.ws_drop_after is not None and self.sent >= f.ws_drop_after:
                self.drop()
                return
            if self.faulty and f.ws_silent_after is not None and self.sent >= f.ws_silent_after:
                return
            if self.faulty and f.ws_skip_after is not None and self.sent == f.ws_skip_after and not self.skipped:
                self.seq += 1  # the client never sees this number: a gap
                self.skipped = True
            when = self.state.now() if t is None else t
            message = {"channel": channel, "client_id": "", "timestamp": timestamp(when), "sequence_num": self.seq}
            message["events"] = events
            self.seq += 1
            self.sent += 1
            await self._write(dumps(message))

    async def send_error(self, message: str) -> None:
        """``{"type":"error","message":…}`` (no envelope, no sequence number)."""
        async with self.lock:
            if not self.closed:
                await self._write(dumps({"type": "error", "message": message}))

    async def _write(self, text: str) -> None:
        try:
            await self.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            self.closed = True

    def drop(self) -> None:
        """Cut the TCP connection without a close frame."""
        self.closed = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    # ------------------------------------------------------------------------------------------ client messages

    async def handle(self, text: str) -> None:
        """Process one client message (subscribe / unsubscribe)."""
        try:
            msg = json.loads(text)
        except ValueError:
            await self.send_error("malformed JSON")
            return
        if not isinstance(msg, dict) or msg.get("type") not in ("subscribe", "unsubscribe"):
            await self.send_error("unknown message type")
            return
        channel = msg.get("channel")
        if not isinstance(channel, str):
            await self.send_error("one channel per message: 'channel' must be a string")
            return
        token = msg.get("jwt")
        if token:
            try:
                self.state.keys.verify(str(token), None)
            except Unauthorized:
                await self.send_error("authentication failure")
                return
        elif channel in AUTH_CHANNELS:
            await self.send_error("authentication failure")
            return
        if channel not in CHANNELS:
            await self.send_error(f"Failed to subscribe: unsupported channel {channel}")
            return
        products = msg.get("product_ids") or []
        unknown = [p for p in products if p not in self.state.products]
        if unknown:
            await self.send_error(f"Failed to subscribe: unknown product {unknown[0]}")
            return
        await self._apply(msg["type"], channel, [str(p) for p in products])

    async def _apply(self, kind: str, channel: str, products: list[str]) -> None:
        current = self.subs.setdefault(channel, set())
        if kind == "subscribe":
            added = [p for p in products if p not in current]
            current.update(products)
        else:
            added = []
            current.difference_update(products)
            if channel in NO_PRODUCT_CHANNELS or not current:
                self.subs.pop(channel, None)
        confirmation = {name: sorted(ids) for name, ids in self.subs.items()}
        await self.send("subscriptions", [{"subscriptions": confirmation}])
        if channel == "ticker" and added:
            for pid in added:
                self.last_ticker.pop(pid, None)
            await self.send_tickers(added, "snapshot")
        if channel == "candles" and added:
            await self.send_candles(added, "snapshot")

    # ------------------------------------------------------------------------------------------------ market data

    def ticker(self, product: SimProduct, t: float) -> dict[str, Any]:
        """One ticker object (all strings) at simulated time ``t``."""
        q = self.state.quote(product, t)
        day_ago = self.state.market.price_at(product, t - 86400)
        dp = product.decimals
        change = (q["last"] / day_ago - 1) * 100 if day_ago else 0.0
        return {
            "type": "ticker",
            "product_id": product.product_id,
            "price": fmt(q["last"], dp),
            "volume_24_h": fmt(400_000.0 * 1440 / max(q["last"], 1e-9)),
            "low_24_h": fmt(min(q["last"], day_ago) * 0.98, dp),
            "high_24_h": fmt(max(q["last"], day_ago) * 1.02, dp),
            "low_52_w": fmt(product.price * 0.5, dp),
            "high_52_w": fmt(product.price * 1.5, dp),
            "price_percent_chg_24_h": fmt(round(change, 4), 4),
            "best_bid": fmt(q["bid"], dp),
            "best_bid_quantity": fmt(q["bid_size"]),
            "best_ask": fmt(q["ask"], dp),
            "best_ask_quantity": fmt(q["ask_size"]),
        }

    async def send_tickers(self, products: list[str], kind: str) -> None:
        """A snapshot (all ``products`` in one message) or one update message per changed product."""
        t = self.state.now()
        tickers = []
        for pid in sorted(products):
            ticker = self.ticker(self.state.products[pid], t)
            key = tuple(float(ticker[k]) for k in _TICKER_KEYS)
            if kind == "update" and self.last_ticker.get(pid) == key:
                continue  # Coinbase sends on matches; an unchanged book is no news
            self.last_ticker[pid] = key
            tickers.append(ticker)
        if kind == "snapshot" and tickers:
            await self.send("ticker", [{"type": "snapshot", "tickers": tickers}], t)
            return
        for ticker in tickers:
            await self.send("ticker", [{"type": "update", "tickers": [ticker]}], t)

    async def send_heartbeat(self) -> None:
        """``heartbeats``: an integer counter per connection and a Go-style time string."""
        self.heartbeats += 1
        t = self.state.now()
        go_time = timestamp(t).replace("T", " ").replace("Z", " +0000 UTC")
        event = {"current_time": f"{go_time} m=+{self.heartbeats:.9f}", "heartbeat_counter": self.heartbeats}
        await self.send("heartbeats", [event], t)

    async def send_candles(self, products: list[str], kind: str) -> None:
        """The open 5-minute candle of each product."""
        t = self.state.now()
        bucket = math.floor(t) - math.floor(t) % 300
        rows = []
        for pid in sorted(products):
            product = self.state.products[pid]
            bars = self.state.market.candles(product, 300, bucket, bucket, t)
            if len(bars["ts"]):
                dp = product.decimals
                row = {"start": str(bucket), "product_id": pid, "volume": fmt(float(bars["volume"][-1]))}
                row.update({c: fmt(float(bars[c][-1]), dp) for c in ("high", "low", "open", "close")})
                rows.append(row)
        if rows:
            await self.send("candles", [{"type": kind, "candles": rows}], t)

    async def pump(self) -> None:
        """Push ticker updates every tick, heartbeats and candles on their own cadence, until closed."""
        cfg = self.state.config
        loop = asyncio.get_running_loop()
        next_heartbeat = loop.time() + cfg.heartbeat_interval
        next_candles = loop.time() + 1.0
        while not self.closed:
            await asyncio.sleep(cfg.tick_interval)
            if "ticker" in self.subs:
                await self.send_tickers(sorted(self.subs["ticker"]), "update")
            if "heartbeats" in self.subs and loop.time() >= next_heartbeat:
                next_heartbeat += cfg.heartbeat_interval
                await self.send_heartbeat()
            if "candles" in self.subs and loop.time() >= next_candles:
                next_candles += 1.0
                await self.send_candles(sorted(self.subs["candles"]), "update")


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """Upgrade to a WebSocket and serve one client until it leaves, is dropped, or misses the subscribe deadline."""
    state = request.app[STATE]
    ws = web.WebSocketResponse(max_msg_size=10 * 1024 * 1024)
    await ws.prepare(request)
    conn = Connection(state, ws, request)
    with state.lock:
        state.ws_connections += 1
    request.app[CONNECTIONS].add(conn)
    pump = asyncio.create_task(conn.pump())
    try:
        await _read_loop(conn, state)
    finally:
        conn.closed = True
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        request.app[CONNECTIONS].discard(conn)
        if not ws.closed and request.transport is not None and not request.transport.is_closing():
            await ws.close()
    return ws


async def _read_loop(conn: Connection, state: SimState) -> None:
    deadline = state.config.subscribe_deadline
    while not conn.closed:
        timeout = deadline if not conn.subs else None
        try:
            msg = await conn.ws.receive(timeout=timeout)
        except TimeoutError:
            await conn.send_error("subscribe deadline exceeded")
            return
        if msg.type == WSMsgType.TEXT:
            await conn.handle(msg.data)
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return


async def close_all(app: web.Application) -> None:
    """On shutdown: close every open WebSocket so the server can stop at once."""
    connections = app[CONNECTIONS]
    for conn in list(connections):
        conn.drop()


def add_routes(app: web.Application) -> None:
    """Serve the feed at ``/`` and ``/ws``."""
    app[CONNECTIONS] = set()
    app.router.add_get("/", websocket_handler)
    app.router.add_get("/ws", websocket_handler)
    app.on_shutdown.append(close_all)
