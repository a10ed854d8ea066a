"""A strategy plugin for the farm's fault tests: it can be slow, raise, or kill its own worker process.

The workers load it as a strategy file (``BACKFARM_STRATEGY_PATH``, set by ``conftest.farm_env``), and so does the
test process (``conftest.chaos``): both give it the same identity, its code hash.
"""

from __future__ import annotations

import os
import signal
import time
from typing import ClassVar

import numpy as np

from backfarm.core.jobs import Params
from backfarm.strategies.base import Param, Strategy
from backfarm.strategies.indicators import Indicators

OK, CRASH, RAISE = 0, 1, 2


class Chaos(Strategy):
    """Chaos (tests only): long on every `every`-th bar. `mode` 0 runs normally after sleeping `sleep_ms`, 1 kills
    its own process with SIGKILL, 2 raises RuntimeError."""

    name: ClassVar[str] = "chaos"
    version: ClassVar[str] = "1"
    params: ClassVar[tuple[Param, ...]] = (
        Param("every", int, 2, 2, 10_000, (2, 3)),
        Param("mode", int, OK, OK, RAISE, (OK,)),
        Param("sleep_ms", int, 0, 0, 5_000, (0,)),
    )

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        if p["mode"] == CRASH:
            os.kill(os.getpid(), signal.SIGKILL)
        if p["mode"] == RAISE:
            raise RuntimeError("chaos strategy failed on purpose")
        if p["sleep_ms"]:
            time.sleep(int(p["sleep_ms"]) / 1000)  # stands in for a long backtest
        n = len(ind.candles)
        return (np.arange(n) % int(p["every"]) == 0).astype(np.float64)
