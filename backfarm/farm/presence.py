"""Which workers are alive and which strategies each can run, so a batch goes to a worker with the right code.

Each worker's main process keeps a key ``worker:{name}`` (:mod:`backfarm.farm.keys`) holding its strategies and
their identities (name → identity, :mod:`backfarm.strategies.registry`), refreshed every :data:`REFRESH_S` seconds
and expiring after :data:`TTL_S` without a refresh: a worker that dies drops out within that time. A batch that names
a strategy a worker lacks (or has other code for) is handed back while some live worker advertises the right
identity, and its jobs are marked dead, with every live worker's copy named, only when none does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence

from backfarm._util.connection import RedisConnection
from backfarm._util.keys import DEFAULT_PREFIX
from backfarm.errors import TemporaryError
from backfarm.farm.keys import BACKTEST_QUEUE, FarmKeys

__all__ = ["REFRESH_S", "TTL_S", "Announcer", "Presence", "missing_reason"]

log = logging.getLogger(__name__)

REFRESH_S = 5.0
"""How often a live worker refreshes its key."""
TTL_S = 20.0
"""How long a worker's key outlives its last refresh (a few missed refreshes under load are not a death)."""


class Presence:
    """Read and write the workers' presence keys on ``conn``."""

    def __init__(self, conn: RedisConnection, prefix: str = DEFAULT_PREFIX) -> None:
        self.conn = conn
        self.keys = FarmKeys(prefix)

    def announce(self, worker: str, strategies: dict[str, str], queues: Sequence[str] = (BACKTEST_QUEUE,)) -> None:
        """Say that ``worker`` is alive, consumes ``queues`` and runs ``strategies`` (name → identity), for the next
        :data:`TTL_S` seconds."""
        payload = json.dumps({"strategies": strategies, "queues": list(queues), "at": time.time()}, sort_keys=True)
        with self.conn.guard():
            self.conn.client.set(self.keys.worker(worker), payload, px=int(TTL_S * 1000))

    def withdraw(self, worker: str) -> None:
        """``worker`` stops: its key goes at once."""
        with self.conn.guard():
            self.conn.client.delete(self.keys.worker(worker))

    def live(self, queue: str = BACKTEST_QUEUE) -> dict[str, dict[str, str]]:
        """Every live worker consuming ``queue``: its strategies (name → identity), by worker name."""
        prefix = self.keys.worker("")
        with self.conn.guard():
            names = sorted(self.conn.client.scan_iter(match=_glob_escape(prefix) + "*", count=500))
            values = self.conn.client.mget(names) if names else []
        found: dict[str, dict[str, str]] = {}
        for key, raw in zip(names, values, strict=True):
            if raw is None:
                continue  # expired between the scan and the read
            try:
                data = json.loads(raw)
                strategies, queues = data["strategies"], data["queues"]
            except (ValueError, KeyError, TypeError):
                continue
            if queue not in queues:
                continue
            found[key[len(prefix) :]] = {str(k): str(v) for k, v in strategies.items()}
        return found


def missing_reason(strategy: str, wanted: str, live: dict[str, dict[str, str]]) -> str:
    """Why no live worker can run ``strategy`` at identity ``wanted``: each live worker's copy, named."""
    copies = [
        f"{worker} has {have[strategy]}" if strategy in have else f"{worker} lacks it" for worker, have in live.items()
    ]
    return f"no live worker has strategy {strategy} {wanted} ({'; '.join(copies) or 'no worker is live'})"


class Announcer:
    """A daemon thread in a worker's main process that keeps its presence key fresh until :meth:`stop`."""

    def __init__(self, presence: Presence, worker: str, strategies: dict[str, str], queues: Sequence[str]) -> None:
        self.presence, self.worker, self.strategies, self.queues = presence, worker, strategies, tuple(queues)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backfarm-presence", daemon=True)

    def start(self) -> None:
        """Announce at once, then every :data:`REFRESH_S` seconds."""
        self._announce()
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing and withdraw the key (best effort: it expires anyway)."""
        self._stop.set()
        self._thread.join(timeout=REFRESH_S)
        try:
            self.presence.withdraw(self.worker)
        except TemporaryError as exc:
            log.debug("could not withdraw the presence of %s: %s", self.worker, exc)

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self._announce()

    def _announce(self) -> None:
        try:
            self.presence.announce(self.worker, self.strategies, self.queues)
        except TemporaryError as exc:  # Redis away: the key may expire; it comes back with Redis
            log.debug("could not refresh the presence of %s: %s", self.worker, exc)


def _glob_escape(text: str) -> str:
    """``text`` with Redis glob characters escaped (a key prefix may hold them)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
