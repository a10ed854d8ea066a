"""Client-side rate limiting for Coinbase REST calls (public 10 req/s per IP, private 30 req/s per key).

The client only depends on the :class:`RateLimiter` protocol (``acquire(scope)`` blocks until a call may go out), so
the farm can swap in a Redis-backed limiter shared by every worker without touching the client. The local limiter
spaces calls evenly (GCRA with a burst of one): at most ``rate`` calls start in any one-second window, and a server
that allows short bursts never sees more than its limit even when requests arrive with some jitter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

PUBLIC = "public"
PRIVATE = "private"
DEFAULT_RATES: dict[str, float] = {PUBLIC: 10.0, PRIVATE: 30.0}
"""Coinbase Advanced Trade REST limits, requests per second (reference/coinbase-api.md §5)."""


class RateLimiter(Protocol):
    """Blocks the caller until one more request in ``scope`` (``public`` / ``private``) is allowed."""

    def acquire(self, scope: str) -> None:
        """Wait for, and take, one request slot in ``scope``."""
        ...


class LocalRateLimiter:
    """Thread-safe, in-process limiter: calls in one scope start at least ``1 / rate`` seconds apart."""

    def __init__(
        self,
        rates: Mapping[str, float] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rates = dict(DEFAULT_RATES if rates is None else rates)
        for scope, rate in self.rates.items():
            if rate <= 0:
                raise ValueError(f"rate for {scope!r} must be > 0, got {rate}")
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalRateLimiter({self.rates!r})"

    def reserve(self, scope: str) -> float:
        """Book the next slot in ``scope`` and return how long the caller must wait for it (seconds, ≥ 0)."""
        interval = 1.0 / self.rates[scope]
        with self._lock:
            now = self._clock()
            slot = max(now, self._next.get(scope, now))
            self._next[scope] = slot + interval
            return slot - now

    def acquire(self, scope: str) -> None:
        """Wait for the booked slot; sleeping happens outside the lock so other threads can book theirs."""
        wait = self.reserve(scope)
        if wait > 0:
            self._sleep(wait)


class NoRateLimit:
    """A limiter that never waits (tests, or a server that is known to be local)."""

    def acquire(self, scope: str) -> None:
        """Return at once."""


_shared: LocalRateLimiter | None = None
_shared_lock = threading.Lock()


def shared_rate_limiter() -> LocalRateLimiter:
    """The process-wide limiter used by default: every client in a process shares Coinbase's per-IP budget."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LocalRateLimiter()
        return _shared
