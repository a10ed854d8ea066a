"""Client-side rate limiting for Coinbase REST calls (public 10 req/s per IP, private 30 req/s per key).

The client only depends on the :class:`RateLimiter` protocol (``acquire(scope)`` blocks until a call may go out,
``slow_down(scope, seconds)`` reports a 429), so the farm can swap in a Redis-backed limiter shared by every worker
without touching the client. The local limiter spaces calls evenly (GCRA with a burst of one): at most ``rate`` calls
start in any one-second window, and a server that allows short bursts never sees more than its limit even when
requests arrive with some jitter.

**Adapting to 429s.** A 429 means the budget is smaller than we thought (another program on the same IP, a stricter
limit): ``slow_down`` holds every call of the scope back for the server's ``Retry-After`` (or the backoff) and halves
the rate (down to :data:`MAX_SLOWDOWN` times slower); the slowdown halves again every :data:`RECOVERY_S` seconds
without a 429, so the rate climbs back once the pressure is gone.
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
MAX_SLOWDOWN = 32.0
"""The most a run of 429s slows a scope down (10 req/s → 0.3 req/s)."""
RECOVERY_S = 20.0
"""Without a 429 for this long, a slowdown halves."""


class RateLimiter(Protocol):
    """Blocks the caller until one more request in ``scope`` (``public`` / ``private``) is allowed."""

    def acquire(self, scope: str) -> None:
        """Wait for, and take, one request slot in ``scope``."""
        ...

    def slow_down(self, scope: str, seconds: float) -> None:
        """The server answered 429: start no call in ``scope`` for ``seconds``, and halve its rate for a while."""
        ...


def decayed(slowdown: float, idle_s: float) -> float:
    """A slowdown after ``idle_s`` seconds without a 429: halved every :data:`RECOVERY_S`, never below 1."""
    return max(1.0, slowdown * 0.5 ** (max(idle_s, 0.0) / RECOVERY_S))


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
        self._slow: dict[str, tuple[float, float]] = {}  # scope → (slowdown, when it was last raised)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalRateLimiter({self.rates!r})"

    def reserve(self, scope: str) -> float:
        """Book the next slot in ``scope`` and return how long the caller must wait for it (seconds, ≥ 0)."""
        with self._lock:
            now = self._clock()
            interval = self.slowdown(scope, now) / self.rates[scope]
            slot = max(now, self._next.get(scope, now))
            self._next[scope] = slot + interval
            return slot - now

    def slowdown(self, scope: str, now: float | None = None) -> float:
        """How many times slower than its rate ``scope`` runs now (1: not slowed)."""
        factor, at = self._slow.get(scope, (1.0, 0.0))
        return decayed(factor, (self._clock() if now is None else now) - at)

    def slow_down(self, scope: str, seconds: float) -> None:
        """A 429 in ``scope``: no call starts for ``seconds``; the rate halves (see the module docstring)."""
        with self._lock:
            now = self._clock()
            self._slow[scope] = (min(MAX_SLOWDOWN, 2.0 * self.slowdown(scope, now)), now)
            self._next[scope] = max(self._next.get(scope, now), now + max(seconds, 0.0))

    def acquire(self, scope: str) -> None:
        """Wait for the booked slot; sleeping happens outside the lock so other threads can book theirs."""
        wait = self.reserve(scope)
        if wait > 0:
            self._sleep(wait)


class NoRateLimit:
    """A limiter that never waits (tests, or a server that is known to be local)."""

    def acquire(self, scope: str) -> None:
        """Return at once."""

    def slow_down(self, scope: str, seconds: float) -> None:
        """Ignored."""


_shared: LocalRateLimiter | None = None
_shared_lock = threading.Lock()


def shared_rate_limiter() -> LocalRateLimiter:
    """The process-wide limiter used by default: every client in a process shares Coinbase's per-IP budget."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LocalRateLimiter()
        return _shared
