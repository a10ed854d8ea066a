"""A Coinbase Advanced Trade-compatible server for tests and offline use (REST + WebSocket, JWT checks, faults).

``with Simulator() as sim:`` serves on a free port of 127.0.0.1; point the client at ``sim.api_url`` and the feed at
``sim.ws_url``; flip ``sim.faults`` to inject 429s, 5xx, slow answers, dropped sockets, sequence gaps, missing
candles. ``backfarm coinbase sim`` runs the same server in the foreground.
"""

from __future__ import annotations

from backfarm.simulator.market import PRODUCTS, FormulaMarket, SourceMarket
from backfarm.simulator.server import Simulator, serve_forever
from backfarm.simulator.state import Faults, RequestRecord, SimConfig

__all__ = [
    "PRODUCTS",
    "Faults",
    "FormulaMarket",
    "RequestRecord",
    "SimConfig",
    "Simulator",
    "SourceMarket",
    "serve_forever",
]
