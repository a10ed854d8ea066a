"""REST client for Coinbase Advanced Trade market data (reference/coinbase-api.md §2, §5).

Public ``/market/*`` endpoints are used when no key is configured; with a key, the authenticated twins (same JSON)
are called with a fresh JWT per request. Every call has an explicit ``(connect, read)`` timeout, goes through a
rate limiter (public 10 req/s, private 30 req/s; injectable), and is retried with capped, jittered exponential
backoff on 429, 5xx, timeouts and dropped connections (honouring ``Retry-After``). Failures surface as the typed
errors of :mod:`backfarm.errors`, with messages a user can act on.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import numpy as np
import requests
import urllib3

from backfarm._util.time import NS_PER_SECOND
from backfarm.coinbase.auth import CdpAuth, CdpKey
from backfarm.coinbase.quotes import Product, ProductBook, Quote, now_utc, parse_time
from backfarm.coinbase.ratelimit import PRIVATE, PUBLIC, RateLimiter, shared_rate_limiter
from backfarm.config import DEFAULT_COINBASE_API_URL, Settings
from backfarm.core.candles import granularity_seconds
from backfarm.errors import (
    AuthError,
    DataError,
    RateLimited,
    ServiceUnavailable,
    ValidationError,
    did_you_mean,
)

log = logging.getLogger(__name__)

API_PREFIX = "/api/v3/brokerage"
MAX_CANDLES_PER_REQUEST = 300
"""Buckets per candles request. Coinbase's cap is 350 today and was 300 (reference §2.4): page by 300."""
GRANULARITY_ENUM: dict[str, str] = {
    "1m": "ONE_MINUTE",
    "5m": "FIVE_MINUTE",
    "15m": "FIFTEEN_MINUTE",
    "30m": "THIRTY_MINUTE",
    "1h": "ONE_HOUR",
    "2h": "TWO_HOUR",
    "6h": "SIX_HOUR",
    "1d": "ONE_DAY",
}
"""backfarm granularity name → Coinbase's enum string."""
_NAME_OF_ENUM = {enum: name for name, enum in GRANULARITY_ENUM.items()}
RETIRED_PRODUCTS = {"MATIC": "POL"}
"""Base currencies Coinbase retired, and what replaced them (MATIC became POL in 2024-09; trading ended 2025-10)."""
USER_AGENT = "backfarm (+coinbase-advanced-trade)"
CandleArrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry transient failures."""

    max_retries: int = 5
    """Retries after the first attempt, for 429, 5xx, timeouts and dropped connections."""
    base_delay: float = 0.25
    """First backoff (seconds); doubles per retry."""
    max_delay: float = 8.0
    """Cap of one backoff."""
    max_retry_after: float = 60.0
    """Cap on a server's ``Retry-After``."""
    rate_limit_patience: float = 150.0
    """How long 429s are waited out (the limiter slowing down meanwhile) before a call gives up, seconds: a storm
    of 429s is a reason to go slower, not to stop."""
    connect_retries: int = 1
    """Retries when the host refuses the connection or does not resolve (fail fast: it is rarely transient)."""


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    params: Mapping[str, Any]
    product_id: str | None = None


class _Retry(Exception):
    """Internal: the attempt failed transiently; ``delay`` overrides the backoff when the server named one."""

    def __init__(
        self,
        reason: str,
        delay: float | None = None,
        final: Exception | None = None,
        *,
        connect: bool = False,
        limited: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.final = final
        self.connect = connect
        self.limited = limited
        """A 429: waited out for up to ``rate_limit_patience``, the limiter slowing down."""
        """The connection could not even be opened (refused, unknown host): retried only ``connect_retries``."""


class CoinbaseClient:
    """Coinbase Advanced Trade market data over REST. Thread-safe for concurrent calls."""

    def __init__(
        self,
        api_url: str = DEFAULT_COINBASE_API_URL,
        key: CdpKey | None = None,
        *,
        limiter: RateLimiter | None = None,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
        retry: RetryPolicy | None = None,
        concurrency: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.key = key
        self.limiter: RateLimiter = limiter if limiter is not None else shared_rate_limiter()
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.concurrency = max(1, concurrency)
        self._sleep = sleep
        self._clock = clock
        """Measures how long 429s have lasted (tests pass one that moves with their ``sleep``)."""
        self._rng = rng or random.Random()
        self._auth = CdpAuth(key) if key is not None else None
        self._products: dict[str, Product] | None = None
        self._products_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CoinbaseClient({self.api_url!r}, key={self.key.name if self.key else None!r})"

    def __enter__(self) -> CoinbaseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> CoinbaseClient:
        """A client for ``settings.coinbase_api_url`` with the configured key (if any)."""
        return cls(settings.coinbase_api_url, CdpKey.from_settings(settings), **kwargs)

    @property
    def authenticated(self) -> bool:
        """True when a key is configured (market data then goes to the authenticated twins)."""
        return self.key is not None

    # ----------------------------------------------------------------------------------------------- endpoints

    def server_time(self) -> datetime:
        """Coinbase's clock (``GET /time``; epoch fields may be strings or numbers)."""
        body = self._get("/time", public=True)
        for field_name, scale in (("epochMillis", 1000.0), ("epochSeconds", 1.0)):
            value = body.get(field_name) if isinstance(body, dict) else None
            if value not in (None, ""):
                parsed = parse_time(float(value) / scale)
                if parsed is not None:
                    return parsed
        parsed = parse_time(body.get("iso") if isinstance(body, dict) else None)
        if parsed is None:
            raise DataError("Coinbase /time answered without a usable time")
        return parsed

    def list_products(self, product_type: str | None = "SPOT") -> list[Product]:
        """All products (``GET /market/products`` or the authenticated ``/products``)."""
        params = {"product_type": product_type} if product_type else {}
        body = self._get(self._market("products"), params=params)
        items = body.get("products") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise DataError("Coinbase product list has no 'products' array")
        return [Product.from_json(p) for p in items if isinstance(p, dict) and p.get("product_id")]

    def products(self, *, refresh: bool = False) -> dict[str, Product]:
        """Product id → product, fetched once per client (``refresh`` fetches again)."""
        with self._products_lock:
            if self._products is None or refresh:
                self._products = {p.product_id: p for p in self.list_products()}
            return self._products

    def get_product(self, product_id: str) -> Product:
        """One product; an unknown id raises ``ValidationError`` with a suggestion."""
        body = self._get(self._market(f"products/{product_id}"), product_id=product_id)
        if not isinstance(body, dict) or not body.get("product_id"):
            raise DataError(f"Coinbase answered product {product_id} without a product object")
        return Product.from_json(body)

    def check_product(self, product_id: str) -> None:
        """Raise ``ValidationError`` (did you mean …) unless ``product_id`` is in the (cached) product list."""
        products = self.products()
        if product_id not in products:
            raise ValidationError(_unknown_product_message(product_id, products))

    def product_book(self, product_id: str, limit: int | None = None) -> ProductBook:
        """The order book (``GET /market/product_book`` or ``/product_book``); ``limit`` levels per side."""
        params: dict[str, Any] = {"product_id": product_id}
        if limit is not None:
            params["limit"] = limit
        body = self._get(self._market("product_book"), params=params, product_id=product_id)
        book = body.get("pricebook") if isinstance(body, dict) else None
        if not isinstance(book, dict):
            raise DataError(f"Coinbase product book for {product_id} has no 'pricebook'")
        return ProductBook.from_json(book, last=body.get("last"))

    def best_bid_ask(self, product_ids: Iterable[str]) -> list[Quote]:
        """Top of book for several products in one authenticated call (``GET /best_bid_ask``; needs a key)."""
        ids = list(product_ids)
        body = self._get("/best_bid_ask", params={"product_ids": ids}, public=False)
        books = body.get("pricebooks") if isinstance(body, dict) else None
        if not isinstance(books, list):
            raise DataError("Coinbase best_bid_ask answer has no 'pricebooks'")
        received = now_utc()
        return [ProductBook.from_json(b).quote(received) for b in books if isinstance(b, dict)]

    def quotes(self, product_ids: Iterable[str]) -> list[Quote]:
        """Current quotes by REST: ``best_bid_ask`` with a key, else one public product book (1 level) each."""
        ids = list(product_ids)
        if self.key is not None:
            return self.best_bid_ask(ids)
        return [self.product_book(pid, limit=1).quote() for pid in ids]

    def key_permissions(self) -> dict[str, Any]:
        """What the configured key may do (``GET /key_permissions``): ``can_view``, ``can_trade``, …"""
        body = self._get("/key_permissions", public=False)
        if not isinstance(body, dict):
            raise DataError("Coinbase key_permissions answer is not an object")
        return body

    # ------------------------------------------------------------------------------------------------- candles

    def candles_page(self, product_id: str, granularity: str, start_s: int, end_s: int) -> CandleArrays:
        """One request: buckets whose open time is in ``[start_s, end_s)`` (≤ 300), ascending, unique.

        ``end`` is sent as ``end_s - 1`` so the same buckets come back whether Coinbase treats ``end`` as
        inclusive or exclusive (reference §2.4 leaves it open), and the reply is filtered to the window anyway.
        """
        seconds = _granularity_seconds(granularity)
        if (end_s - start_s) > MAX_CANDLES_PER_REQUEST * seconds:
            raise ValueError(f"window holds more than {MAX_CANDLES_PER_REQUEST} buckets; use get_candles()")
        params = {"start": str(start_s), "end": str(max(start_s, end_s - 1)), "granularity": _enum(granularity)}
        body = self._get(self._market(f"products/{product_id}/candles"), params=params, product_id=product_id)
        rows = body.get("candles") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise DataError(f"Coinbase candles reply for {product_id} has no 'candles' array")
        return parse_candles(rows, start_s, end_s, product_id)

    def get_candles(
        self,
        product_id: str,
        granularity: str,
        start: datetime | int,
        end: datetime | int,
        *,
        on_page: Callable[[int], None] | None = None,
    ) -> CandleArrays:
        """Every bucket whose open time is in ``[start, end)``, paged by ≤ 300 buckets, ascending and unique.

        Pages are requested by a few threads at once so latency does not eat into the rate limit (the limiter
        still spaces them). Buckets Coinbase omits (no trades) are absent. ``on_page(n_candles)`` is called once
        per finished page, in order, from the calling thread (for progress bars).
        """
        pages = candle_pages(granularity, start, end)
        if not pages:
            return empty_candles()
        if len(pages) == 1 or self.concurrency == 1:
            results = []
            for a, b in pages:
                results.append(self.candles_page(product_id, granularity, a, b))
                if on_page is not None:
                    on_page(len(results[-1]["ts"]))
            return concat_candles(results)
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(pages)), thread_name_prefix="coinbase-page")
        try:
            futures = [pool.submit(self.candles_page, product_id, granularity, a, b) for a, b in pages]
            results = []
            for future in futures:
                results.append(future.result())
                if on_page is not None:
                    on_page(len(results[-1]["ts"]))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return concat_candles(results)

    # ------------------------------------------------------------------------------------------------ plumbing

    def _market(self, suffix: str) -> str:
        """The public ``/market/...`` path, or its authenticated twin when a key is configured."""
        return f"/{suffix}" if self.key is not None else f"/market/{suffix}"

    def _get(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        public: bool | None = None,
        product_id: str | None = None,
    ) -> Any:
        """GET ``API_PREFIX + path``; ``public=None`` derives it from the path (``/market/*`` and ``/time``)."""
        if public is None:
            public = path.startswith("/market/") or path == "/time"
        if not public and self._auth is None:
            raise AuthError(
                f"{path.lstrip('/')} needs a Coinbase API key: set BACKFARM_COINBASE_KEY_NAME and "
                "BACKFARM_COINBASE_PRIVATE_KEY, or BACKFARM_COINBASE_KEY_FILE"
            )
        call = _Call("GET", API_PREFIX + path, dict(params or {}), product_id)
        return self._request(call, public)

    def _request(self, call: _Call, public: bool) -> Any:
        url = self.api_url + call.path
        scope = PUBLIC if public else PRIVATE
        auth = None if public else self._auth
        policy = self.retry
        connect_failures = 0
        attempt = 0
        limited_since: float | None = None
        while True:
            self.limiter.acquire(scope)
            try:
                return self._attempt(call, url, auth, attempt)
            except _Retry as retry:
                if retry.connect:
                    connect_failures += 1
                    if connect_failures > policy.connect_retries:
                        raise retry.final or ServiceUnavailable(retry.reason) from None
                elif retry.limited:
                    limited_since = self._clock() if limited_since is None else limited_since
                    if self._clock() - limited_since >= policy.rate_limit_patience:
                        raise retry.final or RateLimited(retry.reason) from None
                elif attempt >= policy.max_retries:
                    raise retry.final or ServiceUnavailable(retry.reason) from None
                delay = self._backoff(min(attempt, 16), retry.delay)
                if retry.limited:
                    self.limiter.slow_down(scope, delay)  # every caller of the scope waits and goes slower
                log.info("coinbase %s: %s; retry %d in %.2f s", call.path, retry.reason, attempt + 1, delay)
                attempt += 1
                self._sleep(delay)

    def _attempt(self, call: _Call, url: str, auth: CdpAuth | None, attempt: int) -> Any:
        try:
            response = self.session.request(
                call.method, url, params=_encode_params(call.params), auth=auth, timeout=self.timeout
            )
        except requests.exceptions.ConnectTimeout:
            raise _Retry("connect timeout", final=self._unreachable("connection timed out")) from None
        except requests.exceptions.Timeout:
            final = ServiceUnavailable(
                f"Coinbase did not answer {call.path} within {self.timeout[1]:g} s "
                f"(after {self.retry.max_retries + 1} attempts)"
            )
            raise _Retry("read timeout", final=final) from None
        except requests.exceptions.ConnectionError as exc:
            reason = _connect_failure(exc)
            if reason is not None:
                raise _Retry(f"unreachable: {reason}", final=self._unreachable(reason), connect=True) from None
            final = ServiceUnavailable(f"Coinbase dropped the connection on {call.path} (after retries)")
            raise _Retry("connection dropped", final=final) from None
        with response:
            return self._handle(call, response, attempt)

    def _handle(self, call: _Call, response: requests.Response, attempt: int) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError:
                invalid = ServiceUnavailable(f"Coinbase answered {call.path} with a body that is not JSON")
                raise _Retry("invalid JSON", final=invalid) from None
        if status == 429:
            limited = RateLimited(
                f"Coinbase rate limit exceeded on {call.path} (still 429 after "
                f"{self.retry.rate_limit_patience:g} s of slowing down)"
            )
            raise _Retry("429 rate limited", _retry_after(response), limited, limited=True)
        if status >= 500:
            final = ServiceUnavailable(
                f"Coinbase answered {status} {response.reason or ''} on {call.path} "
                f"after {self.retry.max_retries + 1} attempts; try again later"
            )
            raise _Retry(f"{status} server error", _retry_after(response), final)
        if status == 401:
            if attempt == 0 and self._auth is not None:
                # Valid tokens are occasionally refused (coinbase-advanced-py #132): one fresh token, then give up.
                raise _Retry("401 with a fresh token", 0.0, AuthError(self._auth_failed()))
            raise AuthError(self._auth_failed())
        raise self._client_error(call, response)

    def _auth_failed(self) -> str:
        if self.key is None:
            return "Coinbase authentication failed: the request was refused as unauthorized and no key is configured"
        return f"Coinbase authentication failed for key '{self.key.name}' (check key name and key)"

    def _client_error(self, call: _Call, response: requests.Response) -> Exception:
        """Map a 4xx (other than 401/429) to a user error that names what was wrong."""
        status = response.status_code
        message = _error_message(response)
        if status == 403:
            who = f"key '{self.key.name}'" if self.key is not None else "this client"
            return AuthError(
                f"Coinbase refused {call.path}: {who} is missing a required permission "
                f"({message or 'permission denied'}); give the key the 'View' permission"
            )
        if call.product_id is not None and status in (400, 404) and _mentions_product(message, status):
            unknown = self._unknown_product(call.product_id)
            if unknown is not None:
                return unknown
        if status == 400:
            named = [k for k in call.params if k.lower() in message.lower()]
            if named:
                shown = ", ".join(f"{k}={call.params[k]!r}" for k in named)
                return ValidationError(f"Coinbase rejected {shown}: {message}")
            return ValidationError(f"Coinbase rejected the request to {call.path}: {message or 'bad request'}")
        if status == 404:
            return DataError(f"Coinbase has no {call.path} ({message or 'not found'})")
        return DataError(f"Coinbase answered {status} on {call.path}: {message or response.reason}")

    def _unknown_product(self, product_id: str) -> ValidationError | None:
        """A did-you-mean error when ``product_id`` is not a Coinbase product; ``None`` when it is one."""
        try:
            products = self.products()
        except (DataError, ServiceUnavailable, RateLimited, AuthError):
            return ValidationError(f"unknown product '{product_id}'")
        if product_id in products:
            return None
        return ValidationError(_unknown_product_message(product_id, products))

    def _unreachable(self, reason: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"Coinbase is unreachable at {self.api_url} ({reason}); check the network or "
            "BACKFARM_COINBASE_API_URL, or use --source synthetic to work offline"
        )

    def _backoff(self, attempt: int, server_delay: float | None) -> float:
        """Capped exponential backoff with "equal jitter"; a server-named delay (Retry-After) wins."""
        policy = self.retry
        if server_delay is not None:
            return min(server_delay, policy.max_retry_after) + self._rng.uniform(0.0, policy.base_delay / 4)
        ceiling = min(policy.max_delay, policy.base_delay * (2**attempt))
        return self._rng.uniform(ceiling / 2, ceiling)


# --------------------------------------------------------------------------------------------------- helpers


def candle_pages(granularity: str, start: datetime | int, end: datetime | int) -> list[tuple[int, int]]:
    """Split ``[start, end)`` into bucket-aligned ``(start_s, end_s)`` pages of ≤ 300 buckets."""
    seconds = _granularity_seconds(granularity)
    first = -(-_to_seconds(start) // seconds) * seconds  # first bucket open time ≥ start
    stop = _to_seconds(end)
    step = MAX_CANDLES_PER_REQUEST * seconds
    return [(a, min(a + step, stop)) for a in range(first, stop, step)]


def parse_candles(rows: list[Any], start_s: int, end_s: int, product_id: str = "") -> CandleArrays:
    """Coinbase candle objects (strings, newest first) → ascending, unique arrays inside ``[start_s, end_s)``."""
    n = len(rows)
    ts = np.empty(n, dtype=np.int64)
    cols = {c: np.empty(n, dtype=np.float64) for c in ("open", "high", "low", "close", "volume")}
    try:
        for i, row in enumerate(rows):
            ts[i] = int(float(row["start"]))
            for c, arr in cols.items():
                arr[i] = float(row[c])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"Coinbase sent a malformed candle for {product_id} ({type(exc).__name__}: {exc})") from None
    keep = (ts >= start_s) & (ts < end_s)
    ts = ts[keep]
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    unique = np.ones(len(ts), dtype=bool)
    unique[1:] = ts[1:] != ts[:-1]
    out: CandleArrays = {"ts": ts[unique] * NS_PER_SECOND}
    for c, arr in cols.items():
        out[c] = arr[keep][order][unique]
    return out


def concat_candles(parts: list[CandleArrays]) -> CandleArrays:
    """Join pages, keeping ascending order and dropping duplicate buckets (pages may overlap at the edges)."""
    if not parts:
        return empty_candles()
    ts = np.concatenate([p["ts"] for p in parts])
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    unique = np.ones(len(ts), dtype=bool)
    unique[1:] = ts[1:] != ts[:-1]
    out: CandleArrays = {"ts": ts[unique]}
    for c in ("open", "high", "low", "close", "volume"):
        out[c] = np.concatenate([p[c] for p in parts])[order][unique]
    return out


def empty_candles() -> CandleArrays:
    """No bars, with the right dtypes."""
    out: CandleArrays = {"ts": np.empty(0, dtype=np.int64)}
    out.update({c: np.empty(0, dtype=np.float64) for c in ("open", "high", "low", "close", "volume")})
    return out


def _granularity_seconds(granularity: str) -> int:
    """Seconds per bar of a backfarm granularity name, or of Coinbase's enum string for one."""
    return granularity_seconds(_NAME_OF_ENUM.get(granularity, granularity))


def _enum(granularity: str) -> str:
    return GRANULARITY_ENUM.get(granularity, granularity)


def _to_seconds(value: datetime | int) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware (UTC) datetime")
        return math.floor(value.timestamp())
    return int(value)


def _encode_params(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Drop ``None``, repeat keys for lists (``product_ids=A&product_ids=B``), booleans as ``true``/``false``."""
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if v is None:
                continue
            out.append((key, ("true" if v else "false") if isinstance(v, bool) else str(v)))
    return out


def _retry_after(response: requests.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date); ``None`` when absent or garbled."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(response: requests.Response) -> str:
    """The human part of an error body: JSON ``error_details``/``message``, else short plain text (never HTML)."""
    try:
        body = response.json()
    except ValueError:
        text = (response.text or "").strip()
        return "" if text.startswith("<") else text[:200]
    if isinstance(body, dict):
        for key in ("error_details", "message", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:200]
    return ""


def _mentions_product(message: str, status: int) -> bool:
    # 404 on a product path means the product (or its sub-resource) is unknown; a 400 must say so itself.
    return status == 404 or "product" in message.lower()


def _unknown_product_message(product_id: str, products: Mapping[str, Product]) -> str:
    base, _, quote = product_id.partition("-")
    replacement = RETIRED_PRODUCTS.get(base.upper())
    if replacement is not None:
        new_id = f"{replacement}-{quote}" if quote else replacement
        return f"product '{product_id}' was retired by Coinbase ({base.upper()} became {replacement}); use '{new_id}'"
    return did_you_mean("product", product_id, products)


def _connect_failure(exc: requests.exceptions.ConnectionError) -> str | None:
    """Why a connection could not be opened (refused / host not found), or ``None`` if it opened and then broke."""
    cause: Any = exc.args[0] if exc.args else None
    if isinstance(cause, urllib3.exceptions.MaxRetryError):
        cause = cause.reason
    if isinstance(cause, urllib3.exceptions.NameResolutionError):
        return "host not found"
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        text = str(cause).lower()
        if "refused" in text:
            return "connection refused"
        if "unreachable" in text:
            return "network unreachable"
        return "cannot connect"
    return None
