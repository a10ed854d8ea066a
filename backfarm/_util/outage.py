"""Riding out an unreachable service in a loop that waits on it: how long it has been down, and when to give up."""

from __future__ import annotations

import time
from collections.abc import Callable


class Outage:
    """One waiting loop's view of a service that may go away for a while (Redis restarting): each poll that meets it
    unreachable calls :meth:`failed`, each one that gets through calls :meth:`answered`."""

    def __init__(self, limit_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s = limit_s
        self._clock = clock
        self._since: float | None = None

    def failed(self) -> float | None:
        """A poll failed: the seconds the service has been unreachable, or ``None`` once that reaches the limit
        (the caller then lets the error through)."""
        now = self._clock()
        self._since = now if self._since is None else self._since
        down = now - self._since
        return down if down < self.limit_s else None

    def answered(self) -> float | None:
        """A poll got through: how long the outage it ends lasted (``None`` when there was none)."""
        if self._since is None:
            return None
        down, self._since = self._clock() - self._since, None
        return down
