"""The simulator's REST API: Coinbase Advanced Trade market-data paths, JSON shapes and errors (reference §2, §5).

Public ``/market/*`` and ``/time`` ignore ``Authorization``; the authenticated twins (and ``best_bid_ask``,
``key_permissions``) require a valid JWT (401 plain ``Unauthorized`` otherwise). Numbers are strings, candles come
newest first with empty buckets absent, over-cap windows get 400, unknown products 404, and the public rate limit
answers 429. What the official SDK sends is accepted too: capitalised booleans, repeated list keys, ``{}`` bodies.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from aiohttp import web

from backfarm.simulator.keys import Unauthorized
from backfarm.simulator.market import SimProduct
from backfarm.simulator.state import RequestRecord, SimState

P = "/api/v3/brokerage"
STATE = web.AppKey("state", SimState)
KEY = web.RequestKey("key", str)
"""The authenticated key name of a private request."""
GRANULARITY_SECONDS = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "THIRTY_MINUTE": 1800,
    "ONE_HOUR": 3600,
    "TWO_HOUR": 7200,
    "SIX_HOUR": 21600,
    "ONE_DAY": 86400,
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadArgument(Exception):
    """Answer 400 INVALID_ARGUMENT with this text."""


class NotFound(Exception):
    """Answer 404 NOT_FOUND with this text."""


class Forbidden(Exception):
    """Answer 403 PERMISSION_DENIED (the key lacks the scope the endpoint needs)."""


# ------------------------------------------------------------------------------------------------- formatting


def dumps(obj: Any) -> str:
    """Compact JSON, as Coinbase sends it."""
    return json.dumps(obj, separators=(",", ":"))


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A compact JSON answer."""
    return web.Response(text=dumps(obj), status=status, content_type="application/json", headers=headers)


def error_response(status: int, code: str, text: str, headers: dict[str, str] | None = None) -> web.Response:
    """Coinbase's generic error body."""
    return json_response({"error": code, "error_details": text, "message": text}, status, headers)


def fmt(value: float, decimals: int = 8) -> str:
    """A decimal string without trailing zeros ("68923.6", "0.5", "12")."""
    if not math.isfinite(value):
        return ""
    text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def rfc3339(t: float) -> str:
    """``2024-02-27T03:37:14.123456Z``."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------------------------------------- parameters


def parse_bool(request: web.Request, name: str) -> bool | None:
    """``true``/``True``/``FALSE``…; absent → ``None``; anything else → 400."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise BadArgument(f"{name} argument is invalid")


def parse_int(request: web.Request, name: str, *, required: bool = False, low: int | None = None) -> int | None:
    """An integer query parameter (400 when malformed, missing-but-required, or below ``low``)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        if required:
            raise BadArgument(f"{name} argument is required")
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadArgument(f"{name} argument is invalid") from None
    if low is not None and value < low:
        raise BadArgument(f"{name} argument is invalid")
    return value


def get_product(state: SimState, product_id: str) -> SimProduct:
    """The product, or 404."""
    product = state.products.get(product_id)
    if product is None:
        raise NotFound(f"ProductID {product_id} not found")
    return product


# ------------------------------------------------------------------------------------------------- middleware


def is_public(path: str) -> bool:
    """``/market/*`` and ``/time`` need no auth and count against the per-IP public limit."""
    return path.startswith(P + "/market/") or path == P + "/time"


@web.middleware
async def coinbase_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Faults, rate limits, auth and error mapping around every REST handler; records each request."""
    state = request.app[STATE]
    if not request.path.startswith(P):
        return await handler(request)
    query = {k: request.query.getall(k) for k in request.query}
    record = RequestRecord(request.method, request.path, query, 0, time.monotonic())
    state.requests.append(record)
    response = await _answer(state, request, handler, record)
    record.status = response.status
    return response


async def _answer(state: SimState, request: web.Request, handler: Handler, record: RequestRecord) -> web.Response:
    faults = state.faults
    applies = not faults.only_paths or faults.only_paths in request.path
    delay = (faults.delays.pop(0) if applies and faults.delays else 0.0) + faults.latency
    if delay > 0:
        await asyncio.sleep(delay)
    if applies and faults.statuses:
        return _forced(state, faults.statuses.pop(0))
    if applies and faults.error_rate > 0 and state.rng.random() < faults.error_rate:
        return _forced(state, 503)
    if is_public(request.path):
        who = request.remote or "?"
        scope = "public"
    else:
        try:
            who = _authenticate(state, request)
        except Unauthorized:
            return web.Response(text="Unauthorized", status=401, content_type="text/plain")
        record.key = request[KEY] = who
        scope = "private"
    wait = state.rate_limited(scope, who)
    if wait > 0:
        return _too_many(state, scope, wait)
    try:
        response = await handler(request)
    except BadArgument as exc:
        return error_response(400, "INVALID_ARGUMENT", str(exc))
    except NotFound as exc:
        return error_response(404, "NOT_FOUND", str(exc))
    except Forbidden:
        return error_response(403, "PERMISSION_DENIED", "Missing required scopes")
    except web.HTTPNotFound:
        return error_response(404, "NOT_FOUND", "Not Found")
    assert isinstance(response, web.Response)
    return response


def _authenticate(state: SimState, request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise Unauthorized("no bearer token")
    uri = f"{request.method} {request.host}{request.path}"
    return state.keys.verify(header[len("Bearer ") :].strip(), uri)


def _forced(state: SimState, status: int) -> web.Response:
    headers = {} if state.faults.retry_after is None else {"Retry-After": fmt(state.faults.retry_after, 3)}
    if status == 429:
        return _too_many(state, "public", 1.0, headers)
    if status == 401:
        return web.Response(text="Unauthorized", status=401, content_type="text/plain")
    text = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "error")
    return error_response(status, "INTERNAL" if status >= 500 else "UNKNOWN", text, headers)


def _too_many(state: SimState, scope: str, wait: float, headers: dict[str, str] | None = None) -> web.Response:
    rate = (state.config.public_rate if scope == "public" else state.config.private_rate) or 0
    all_headers = {
        "x-ratelimit-limit": str(int(rate)),
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": str(max(1, math.ceil(wait))),
        **(headers or {}),
    }
    if state.faults.body_429 == "html":
        page = "<html><head><title>Coinbase</title></head><body>Too Many Requests</body></html>"
        return web.Response(text=page, status=429, content_type="text/html", headers=all_headers)
    return error_response(429, "RATE_LIMIT_EXCEEDED", "Too many requests", all_headers)


# --------------------------------------------------------------------------------------------------- handlers


async def server_time(request: web.Request) -> web.Response:
    """``GET /time``: epoch fields as strings."""
    now = request.app[STATE].now()
    iso = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json_response({"iso": iso, "epochSeconds": str(int(now)), "epochMillis": str(int(now * 1000))})


def product_json(state: SimState, product: SimProduct) -> dict[str, Any]:
    """The product object (§2.3 field set, values from the simulated market)."""
    now = state.now()
    price = state.market.price_at(product, now)
    before = state.market.price_at(product, now - 86400)
    change = (price / before - 1) * 100 if before else 0.0
    dp = product.decimals
    return {
        "product_id": product.product_id,
        "price": fmt(price, dp),
        "price_percentage_change_24h": fmt(round(change, 4), 4),
        "volume_24h": fmt(round(400_000.0 * 1440 / max(price, 1e-9), 8)),
        "volume_percentage_change_24h": "0",
        "base_increment": product.base_increment,
        "quote_increment": product.quote_increment,
        "quote_min_size": "1",
        "quote_max_size": "150000000",
        "base_min_size": product.base_increment,
        "base_max_size": "3400",
        "base_name": product.base_name,
        "quote_name": {"USD": "US Dollar", "USDC": "USDC", "EUR": "Euro", "BTC": "Bitcoin"}.get(product.quote, ""),
        "watched": False,
        "is_disabled": False,
        "new": False,
        "status": "online",
        "cancel_only": False,
        "limit_only": False,
        "post_only": False,
        "trading_disabled": False,
        "auction_mode": False,
        "product_type": "SPOT",
        "quote_currency_id": product.quote,
        "base_currency_id": product.base,
        "fcm_trading_session_details": None,
        "mid_market_price": "",
        "alias": product.alias_of or "",
        "alias_to": [p.product_id for p in state.products.values() if p.alias_of == product.product_id],
        "base_display_symbol": product.base,
        "quote_display_symbol": product.quote,
        "view_only": False,
        "price_increment": product.quote_increment,
        "display_name": product.product_id,
        "product_venue": "CBE",
        "approximate_quote_24h_volume": fmt(round(400_000.0 * 1440, 2), 2),
        "new_at": rfc3339(product.listed).replace(".000000Z", "Z"),
    }


async def list_products(request: web.Request) -> web.Response:
    """``GET /market/products`` and ``/products``: filters ``product_type``, ``product_ids``, ``limit``/``offset``."""
    state = request.app[STATE]
    parse_bool(request, "get_all_products")
    parse_bool(request, "get_tradability_status")
    product_type = request.query.get("product_type", "").upper()
    if product_type not in ("", "SPOT", "FUTURE", "UNKNOWN_PRODUCT_TYPE"):
        raise BadArgument("product_type argument is invalid")
    wanted = set(request.query.getall("product_ids", []))
    products = [] if product_type == "FUTURE" else list(state.products.values())
    if wanted:
        products = [p for p in products if p.product_id in wanted]
    offset = parse_int(request, "offset", low=0) or 0
    limit = parse_int(request, "limit", low=0)
    products = products[offset : offset + limit if limit else None]
    items = [product_json(state, p) for p in products]
    return json_response({"products": items, "num_products": len(items), "pagination": None})


async def one_product(request: web.Request) -> web.Response:
    """``GET /market/products/{id}``: the bare product object."""
    state = request.app[STATE]
    parse_bool(request, "get_tradability_status")
    return json_response(product_json(state, get_product(state, request.match_info["product_id"])))


async def candles(request: web.Request) -> web.Response:
    """``GET .../products/{id}/candles``: ``start``/``end`` UNIX seconds, ``granularity`` enum; newest first."""
    state = request.app[STATE]
    product = get_product(state, request.match_info["product_id"])
    granularity = GRANULARITY_SECONDS.get(request.query.get("granularity", ""))
    if granularity is None:
        raise BadArgument("granularity argument is invalid")
    start = parse_int(request, "start", required=True)
    end = parse_int(request, "end", required=True)
    limit = parse_int(request, "limit", low=1)
    assert start is not None and end is not None
    if end < start:
        raise BadArgument("start and end argument is invalid - end must be after start")
    first = -(-start // granularity) * granularity
    last = end - end % granularity if state.config.end_inclusive else -(-end // granularity) * granularity - granularity
    count = (last - first) // granularity + 1
    cap = state.config.candle_cap
    if count > cap or (limit is not None and limit > cap):
        raise BadArgument(f"start and end argument is invalid - number of candles requested should be at most {cap}")
    bars = state.market.candles(product, granularity, first, last, state.now())
    keep = ~state.omitted(product, bars["ts"])
    dp = product.decimals
    columns = (np.asarray(bars[c])[keep] for c in _ORDER)
    rows = [_candle_row(values, dp) for values in zip(*columns, strict=True)]
    rows.reverse()  # newest first, as Coinbase sends them
    if limit is not None:
        rows = rows[:limit]
    return json_response({"candles": rows})


_ORDER = ("ts", "low", "high", "open", "close", "volume")


def _candle_row(values: tuple[Any, ...], dp: int) -> dict[str, str]:
    t, low, high, open_, close, volume = values
    return {
        "start": str(int(t)),
        "low": fmt(low, dp),
        "high": fmt(high, dp),
        "open": fmt(open_, dp),
        "close": fmt(close, dp),
        "volume": fmt(volume),
    }


def book_levels(state: SimState, product: SimProduct, t: float, depth: int) -> tuple[list[dict], list[dict], dict]:
    """``depth`` bid and ask levels around the simulated quote (bids descending, asks ascending)."""
    q = state.quote(product, t)
    step = max(q["tick"], round(q["last"] * 0.0001, product.decimals))
    dp = product.decimals
    bids = [{"price": fmt(q["bid"] - i * step, dp), "size": fmt(q["bid_size"] * (1 + i))} for i in range(depth)]
    asks = [{"price": fmt(q["ask"] + i * step, dp), "size": fmt(q["ask_size"] * (1 + i))} for i in range(depth)]
    return bids, asks, q


async def product_book(request: web.Request) -> web.Response:
    """``GET /market/product_book?product_id=…&limit=…``."""
    state = request.app[STATE]
    product_id = request.query.get("product_id")
    if not product_id:
        raise BadArgument("product_id argument is required")
    product = get_product(state, product_id)
    depth = parse_int(request, "limit", low=0) or 50
    if depth > 1000:
        raise BadArgument("limit argument is invalid")
    now = state.now()
    bids, asks, q = book_levels(state, product, now, depth)
    dp = product.decimals
    mid = (q["bid"] + q["ask"]) / 2
    body = {
        "pricebook": {"product_id": product.product_id, "bids": bids, "asks": asks, "time": rfc3339(now)},
        "last": fmt(q["last"], dp),
        "mid_market": fmt(mid, dp + 1),
        "spread_bps": fmt((q["ask"] - q["bid"]) / mid * 1e4, 5),
        "spread_absolute": fmt(q["ask"] - q["bid"], dp),
    }
    return json_response(body)


async def best_bid_ask(request: web.Request) -> web.Response:
    """``GET /best_bid_ask?product_ids=A&product_ids=B`` (authenticated): one level per side."""
    state = request.app[STATE]
    _require_view(request)
    ids = request.query.getall("product_ids", []) or list(state.products)
    unknown = [pid for pid in ids if pid not in state.products]
    if unknown:
        raise BadArgument(f"product_ids argument is invalid: unknown product {unknown[0]}")
    now = state.now()
    books = []
    for pid in ids:
        bids, asks, _ = book_levels(state, state.products[pid], now, 1)
        books.append({"product_id": pid, "bids": bids, "asks": asks, "time": rfc3339(now)})
    return json_response({"pricebooks": books})


async def key_permissions(request: web.Request) -> web.Response:
    """``GET /key_permissions`` (authenticated)."""
    state = request.app[STATE]
    info = state.keys.get(_key_of(request))
    return json_response(dict(info.permissions) if info else {})


def _key_of(request: web.Request) -> str:
    """The key name the middleware authenticated."""
    return request.get(KEY, "")


def _require_view(request: web.Request) -> None:
    info = request.app[STATE].keys.get(_key_of(request))
    if info is None or not info.permissions.get("can_view"):
        raise Forbidden()


def _private_market(handler: Handler) -> Handler:
    """The authenticated twin of a public market handler: same answer, but the key must be allowed to view."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        _require_view(request)
        return await handler(request)

    return wrapped


def add_routes(app: web.Application) -> None:
    """Register every REST path (public and authenticated twins)."""
    r = app.router
    r.add_get(P + "/time", server_time)
    for prefix, wrap in ((P + "/market", lambda h: h), (P, _private_market)):
        r.add_get(prefix + "/products", wrap(list_products))
        r.add_get(prefix + "/products/{product_id}", wrap(one_product))
        r.add_get(prefix + "/products/{product_id}/candles", wrap(candles))
        r.add_get(prefix + "/product_book", wrap(product_book))
    r.add_get(P + "/best_bid_ask", best_bid_ask)
    r.add_get(P + "/key_permissions", key_permissions)
