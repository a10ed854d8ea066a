"""How many cores this process may use: the default size of the local executor and of a worker."""

from __future__ import annotations

import os


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
