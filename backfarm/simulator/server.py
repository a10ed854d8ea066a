"""Run the simulator: in a background thread for tests (``with Simulator() as sim: sim.api_url``) or in the
foreground for ``backfarm coinbase sim``.

The aiohttp server runs on its own event loop in a daemon thread, so synchronous code (the ``requests`` client, the
``websockets`` feed) talks to it over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from backfarm.coinbase.auth import CdpKey, PublicKey
from backfarm.simulator import rest, ws
from backfarm.simulator.market import MarketData
from backfarm.simulator.state import Faults, RequestRecord, SimConfig, SimState


def build_app(state: SimState) -> web.Application:
    """The aiohttp application serving REST and the WebSocket feed."""
    app = web.Application(middlewares=[rest.coinbase_middleware])
    app[rest.STATE] = state
    rest.add_routes(app)
    ws.add_routes(app)
    return app


class Simulator:
    """A Coinbase Advanced Trade look-alike on 127.0.0.1 (REST + WebSocket), started and stopped from sync code."""

    def __init__(
        self,
        config: SimConfig | None = None,
        faults: Faults | None = None,
        market: MarketData | None = None,
    ) -> None:
        self.config = config or SimConfig()
        self.faults = faults or Faults()
        self.state = SimState(self.config, self.faults, market)
        self.port = 0
        self.ws_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"Simulator(api_url={self.api_url!r}, ws_url={self.ws_url!r})"

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 10.0) -> Simulator:
        """Start serving in a background thread; returns once the ports are bound."""
        if self._thread is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="coinbase-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("Coinbase simulator did not start in time")
        if self._error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and stop the server thread."""
        if self._thread is None or self._loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            future.result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._startup())
        except BaseException as exc:  # surfaced to start() in the calling thread
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _startup(self) -> None:
        cfg = self.config
        self._runner = web.AppRunner(build_app(self.state), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.ws_port = self.port
        if cfg.ws_port is not None and cfg.ws_port != self.port:
            ws_site = web.TCPSite(self._runner, cfg.host, cfg.ws_port)
            await ws_site.start()
            self.ws_port = int(self._runner.addresses[-1][1])

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ---------------------------------------------------------------------------------------------------- access

    @property
    def api_url(self) -> str:
        """Base URL for ``BACKFARM_COINBASE_API_URL`` (``http://127.0.0.1:PORT``)."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """URL for ``BACKFARM_COINBASE_WS_URL`` (``ws://127.0.0.1:PORT/ws``)."""
        return f"ws://{self.config.host}:{self.ws_port}/ws"

    def register_key(self, key: CdpKey | str, public_key: PublicKey | None = None, **permissions: Any) -> None:
        """Accept JWTs signed by ``key`` (permissions: ``can_view``, ``can_trade``, ``can_transfer``)."""
        self.state.keys.register(key, public_key, **permissions)

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the REST request log."""
        return list(self.state.requests)

    def candle_requests(self) -> list[RequestRecord]:
        """Logged requests to a candles path."""
        return [r for r in self.requests if r.path.endswith("/candles")]

    def clear_log(self) -> None:
        """Forget the logged requests."""
        self.state.requests.clear()

    @property
    def ws_connections(self) -> int:
        """How many WebSocket connections were accepted so far."""
        return self.state.ws_connections

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's loop thread and return its result (for state that must not race)."""
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)


def serve_forever(sim: Simulator, on_ready: Callable[[Simulator], None] | None = None) -> None:
    """Start ``sim``, call ``on_ready``, and block until Ctrl-C; then stop cleanly."""
    sim.start()
    try:
        if on_ready is not None:
            on_ready(sim)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
