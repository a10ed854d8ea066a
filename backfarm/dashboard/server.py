"""The dashboard's web server: one page, its static files, and read-only JSON endpoints the page polls.

Endpoints (all ``GET``; anything else is 405):

==============================  ============================================================================
``/``                           the page (``static/index.html``)
``/static/...``                 its script, style and the vendored chart library
``/api/meta``                   store label, metric names and directions, refresh period
``/api/sweeps``                 every sweep with progress, plus the values the filter menus offer
``/api/leaderboard``            ``?metric=&order=asc|desc|best&limit=&sweep=&strategy=&symbol=&kind=``
``/api/strategies``             the per-strategy table under the same filters
``/api/paper``                  live paper sessions (status, accounts) and paper results (``kind=paper``)
``/api/paper/{session_id}``     each account's equity so far in one session
``/api/result/{job_id}``        one result with its stored equity curve and trades
``/api/curves?ids=a,b``         equity curves of up to 20 results (the overlay of the top rows)
==============================  ============================================================================

Store calls block (SQLite, redis-py), so they run in worker threads. Identical requests within a short time share
one store query (several open tabs cost one), and the per-strategy table — a scan of every matching result on
Redis — is recomputed at most every ten times as long as it took. Errors come back as ``{"error": message}``:
400 for bad parameters, 503 when the store is unreachable.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from aiohttp import web

from backfarm import __version__
from backfarm.config import Settings
from backfarm.dashboard import DEFAULT_REFRESH_S, STATIC_DIR, check_assets, data
from backfarm.dashboard import paper as live_paper
from backfarm.dashboard.paper import PaperSessions
from backfarm.dashboard.recompute import with_curve
from backfarm.errors import BackfarmError, TemporaryError, UserError, ValidationError
from backfarm.results.store import ResultStore

log = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_ENTRIES = 256
SLOW_FACTOR = 10.0
"""A query that took t seconds is reused for at least ``SLOW_FACTOR × t`` (the store spends ≤ ~10% on it)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
"""Sent with every response: nothing but this server's own files may load or be contacted."""


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``user:password`` → (user, password); ``None``/empty → no auth. Both parts must be non-empty."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValidationError("--auth must look like user:password")
    return user, password


class _Cache:
    """Recent query results by key; concurrent identical queries share one computation."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._running: dict[Hashable, asyncio.Future[Any]] = {}

    async def get(self, key: Hashable, compute: Callable[[], T], ttl_s: float | None = None) -> T:
        """The cached value of ``key`` if still fresh, else ``compute()`` run in a thread (once for all waiters)."""
        hit = self._entries.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        future = self._running.get(key)
        if future is None:
            future = asyncio.ensure_future(self._compute(key, compute, self.ttl_s if ttl_s is None else ttl_s))
            self._running[key] = future
        return await asyncio.shield(future)

    async def _compute(self, key: Hashable, compute: Callable[[], T], ttl_s: float) -> T:
        started = time.monotonic()
        try:
            value = await asyncio.to_thread(compute)
        finally:
            self._running.pop(key, None)
        now = time.monotonic()
        if len(self._entries) >= CACHE_ENTRIES:
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            if len(self._entries) >= CACHE_ENTRIES:
                self._entries.clear()
        self._entries[key] = (now + max(ttl_s, SLOW_FACTOR * (now - started)), value)
        return value


LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
"""Host names that always mean this machine."""


@dataclass
class Dashboard:
    """The application state: one open store, how to label it, the refresh period, optional basic auth."""

    store: ResultStore
    store_label: str = ""
    refresh_s: float = DEFAULT_REFRESH_S
    auth: tuple[str, str] | None = None
    known_strategies: tuple[str, ...] = ()
    settings: Settings | None = None
    """When given, results stored without a curve get one recomputed (in memory) from cached candles."""
    sessions: PaperSessions | None = None
    """Live paper sessions (the session store of the same settings)."""
    allowed_hosts: frozenset[str] = LOCAL_NAMES
    """Host names a request may address (besides any IP address): see :func:`allowed_hosts`."""

    def __post_init__(self) -> None:
        check_assets()
        # Half the page's period: two tabs polling out of phase still share most queries.
        self._cache = _Cache(ttl_s=max(self.refresh_s / 2, 0.2))

    # --- handlers --------------------------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def meta(self, request: web.Request) -> web.Response:
        return _json(data.meta(self.store_label, self.refresh_s, __version__))

    async def sweeps(self, request: web.Request) -> web.Response:
        rows = await self._cache.get("sweeps", partial(data.sweeps, self.store))
        return _json({"sweeps": rows, "facets": data.facets(rows, self.known_strategies)})

    async def leaderboard(self, request: web.Request) -> web.Response:
        query = await self._cache.get(("query", _key(request)), partial(data.parse_query, request.query, self.store))
        board = await self._cache.get(("board", query), partial(data.leaderboard, self.store, query))
        return _json(board)

    async def strategies(self, request: web.Request) -> web.Response:
        parse = partial(data.parse_filters, request.query, self.store)
        filters = await self._cache.get(("filters", _key(request)), parse)
        rows = await self._cache.get(("strategies", filters), partial(data.strategies, self.store, filters))
        return _json({"rows": rows})

    async def paper_list(self, request: web.Request) -> web.Response:
        rows = await self._cache.get(("paper",), partial(data.paper, self.store))
        live = await self._cache.get(("sessions",), self._live_sessions)
        return _json({"rows": rows, "sessions": live})

    def _live_sessions(self) -> list[dict[str, Any]]:
        return live_paper.sessions(self.sessions.store()) if self.sessions else []

    async def paper_session(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session_id"]
        found = await self._cache.get(("session", session_id), partial(self._session_curves, session_id))
        if found is None:
            return _json({"error": f"unknown paper session '{session_id}'"}, status=404)
        return _json(found)

    def _session_curves(self, session_id: str) -> dict[str, Any] | None:
        return live_paper.curves(self.sessions.store(), session_id) if self.sessions else None

    async def result(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        found = await self._cache.get(("result", job_id), partial(self._result, job_id), ttl_s=60.0)
        if found is None:
            return _json({"error": f"unknown result '{job_id}'"}, status=404)
        return _json(found)

    def _result(self, job_id: str) -> dict[str, Any] | None:
        record = self.store.get(job_id)
        if record is None:
            return None
        sessions = self.sessions.store() if self.sessions is not None else None
        record, note = with_curve(record, self.settings, sessions=sessions)
        return {**data.detail(record), "curve_note": note}

    async def curves(self, request: web.Request) -> web.Response:
        ids = tuple(i for i in request.query.get("ids", "").split(",") if i)
        found = await self._cache.get(("curves", ids), partial(data.curves, self.store, ids))
        return _json({"curves": found})

    # --- application -----------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application (read-only routes, security headers, errors as JSON, optional basic auth)."""
        middlewares = [_errors, _host_check(self.allowed_hosts)] + ([_basic_auth(self.auth)] if self.auth else [])
        app = web.Application(middlewares=middlewares)
        app.router.add_get("/", self.index)
        app.router.add_get("/api/meta", self.meta)
        app.router.add_get("/api/sweeps", self.sweeps)
        app.router.add_get("/api/leaderboard", self.leaderboard)
        app.router.add_get("/api/strategies", self.strategies)
        app.router.add_get("/api/paper", self.paper_list)
        app.router.add_get("/api/paper/{session_id}", self.paper_session)
        app.router.add_get("/api/result/{job_id}", self.result)
        app.router.add_get("/api/curves", self.curves)
        app.router.add_static("/static", STATIC_DIR, show_index=False, follow_symlinks=False)
        app.on_response_prepare.append(_headers)
        return app


def _key(request: web.Request) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(request.query.items()))


def _json(payload: Any, status: int = 200) -> web.Response:
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return web.Response(text=text, status=status, content_type="application/json")


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """backfarm errors as one-line JSON errors; anything else is logged and answered 500 without details."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except UserError as exc:
        return _json({"error": str(exc)}, status=400)
    except TemporaryError as exc:
        return _json({"error": str(exc)}, status=503)
    except BackfarmError as exc:
        return _json({"error": str(exc)}, status=500)
    except Exception:
        log.exception("dashboard request %s failed", request.path)
        return _json({"error": "internal error (see the dashboard's log)"}, status=500)


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names a dashboard listening on ``host`` answers to: this machine's local names, ``host`` itself when
    it is a name, and ``extra`` (``--allow-host``). Requests addressed to an IP address are always answered: DNS
    rebinding needs a *name* that an attacker's page resolves to this machine, and a page reached by IP is its own
    origin."""
    names = {n.strip().lower().rstrip(".") for n in (host, *extra) if n.strip()}
    return LOCAL_NAMES | {n for n in names if not _is_ip(n)}


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:8000`` → ``::1``), lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _host_check(allowed: frozenset[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Refuse requests addressed to a host name the dashboard does not serve (DNS rebinding: a web page whose name
    an attacker points at 127.0.0.1 must not read the results), before anything else, basic auth included."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = _host_name(request.headers.get("Host", "")).rstrip(".")
        if not (_is_ip(name) or name in allowed):
            return _json({"error": f"this dashboard does not serve the host {name!r} (see --allow-host)"}, status=421)
        return await handler(request)

    return check


def _basic_auth(credentials: tuple[str, str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    expected = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        try:
            ok = scheme.lower() == "basic" and hmac.compare_digest(
                base64.b64decode(given.strip(), validate=True), base64.b64decode(expected)
            )
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="backfarm", charset="UTF-8"'})
        return await handler(request)

    return check


async def start(dashboard: Dashboard, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Start serving; returns the runner (``await runner.cleanup()`` to stop) and the URL actually bound."""
    runner = web.AppRunner(dashboard.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ValidationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
    return runner, f"http://{shown}:{bound[1]}/"


def serve(dashboard: Dashboard, host: str, port: int, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted (Ctrl-C raises ``KeyboardInterrupt`` out of here after a clean shutdown)."""

    async def main() -> None:
        runner, url = await start(dashboard, host, port)
        if on_ready is not None:
            on_ready(url)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
