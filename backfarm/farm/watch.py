"""Watching a sweep on the farm: its progress, the rate it moves at, which workers answer, and wake-ups on commits.

:meth:`backfarm.farm.client.FarmClient.wait` polls the store's sets; :class:`Wakeups` ends each sleep as soon as a
worker announces a committed batch, and :class:`Pinger` notices a worker that stopped answering (its unacknowledged
batch can then be re-enqueued without waiting out the visibility timeout).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backfarm.errors import TemporaryError
from backfarm.farm.ledger import Ledger

log = logging.getLogger(__name__)

PING_EVERY_S = 5.0
"""Seconds between two pings of the workers while a client waits."""


@dataclass
class Progress:
    """A sweep's progress as the farm sees it."""

    sweep_id: str
    total: int
    done: int
    dead: int
    elapsed_s: float = 0.0
    rate: float = 0.0
    """Jobs finished per second, over the last few polls."""
    workers: list[str] | None = None
    """Names of the workers that answered the last ping (``None`` before the first ping)."""
    queued: int = 0
    """Messages waiting in the backtest queue."""
    cancelled: bool = False
    reconciled: int = 0
    """Jobs re-enqueued by this wait because the sweep had stalled."""
    finished_here: int = 0
    """Jobs done or dead since this wait started."""
    unreachable_s: float | None = None
    """Seconds Redis has not answered, while the wait rides out an outage (``None``: it answers)."""

    @property
    def pending(self) -> int:
        """Jobs neither done nor dead."""
        return max(0, self.total - self.done - self.dead)

    @property
    def complete(self) -> bool:
        """Every expected job is done or dead."""
        return self.pending == 0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate (``None`` when nothing is moving)."""
        return self.pending / self.rate if self.rate > 0 else None


@dataclass
class RateWindow:
    """Finished-job counts over the last ``span_s`` seconds."""

    span_s: float = 10.0
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, finished: int) -> float:
        """Record ``finished`` at ``now``; the rate over the window, in jobs per second."""
        self.samples.append((now, finished))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.span_s:
            self.samples.popleft()
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def known_workers(answered: list[str] | None, reported: set[str]) -> list[str] | None:
    """Workers that answered the last ping or reported a batch of this sweep; ``None`` while neither is known."""
    if answered is None and not reported:
        return None
    return sorted(set(answered or ()) | reported)


class Wakeups:
    """Messages workers publish after each batch of the sweep they commit: the wait loop wakes on them instead of
    sleeping out its poll interval, so a finished sweep is seen within milliseconds. Polling stays the fallback (a
    message published while nobody listened is simply gone)."""

    def __init__(self, ledger: Ledger, sweep_id: str) -> None:
        self.ledger = ledger
        self.sweep_id = sweep_id
        self.pubsub: Any = None
        self.workers: set[str] = set()
        """Names of the workers whose messages arrived."""

    def __enter__(self) -> Wakeups:
        try:
            self.pubsub = self.ledger.subscribe(self.sweep_id)
        except TemporaryError as exc:
            log.debug("progress messages unavailable, polling only: %s", exc)
            self.pubsub = None
        return self

    def wait(self, timeout: float) -> None:
        """Until a message arrives or ``timeout`` passes; then drop any others already waiting."""
        if self.pubsub is None:
            time.sleep(timeout)
            return
        deadline = time.monotonic() + timeout
        try:
            with self.ledger.conn.guard():
                while (left := deadline - time.monotonic()) > 0:
                    if self._note(self.pubsub.get_message(timeout=left)):
                        while self._note(self.pubsub.get_message(timeout=0)):
                            pass
                        return
        except TemporaryError as exc:
            log.debug("progress messages lost, polling only: %s", exc)
            self.pubsub = None
            time.sleep(max(0.0, deadline - time.monotonic()))

    def _note(self, message: dict[str, Any] | None) -> bool:
        """Remember who sent ``message``; False when there was none."""
        if message is None:
            return False
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            worker = json.loads(message["data"]).get("worker")
            if isinstance(worker, str) and worker:
                self.workers.add(worker)
        return True

    def __exit__(self, *exc: object) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                self.pubsub.close()


class Pinger:
    """Pings the workers (``ping()`` returns the names that answered) every ``every_s`` on a daemon thread;
    ``workers`` is the latest answer, ``missing`` the workers that answered an earlier ping but neither of the last
    two.

    One missed ping proves nothing (a late reply on a busy machine, a broker hiccup); two in a row, ``every_s``
    apart, are what a dead worker looks like.
    """

    def __init__(self, ping: Callable[[], list[str]], every_s: float | None = None) -> None:
        self.ping = ping
        self.every_s = PING_EVERY_S if every_s is None else every_s
        self.workers: list[str] | None = None
        self.missing: frozenset[str] = frozenset()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backfarm-ping", daemon=True)

    def _run(self) -> None:
        seen: set[str] = set()
        previous: set[str] | None = None
        while not self._stop.is_set():
            answer = set(self.ping())
            self.workers = sorted(answer)
            if previous is not None:
                self.missing = frozenset(seen - answer - previous)
            seen |= answer
            previous = answer
            self._stop.wait(self.every_s)

    def __enter__(self) -> Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # A ping in flight is not waited for (it takes at least the ping timeout): a short sweep would otherwise end
        # that much later. The daemon thread finishes it on its own connection; its errors are caught and logged.
        self._stop.set()
