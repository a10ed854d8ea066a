"""Strategy targets at each bar close, from the strategies' own vectorized functions on the symbol's buffer.

At the close of bar ``i`` a strategy's target is ``strategy.exposure(Indicators(buffer[0 : i + 1]))[i]``: the same
function a backtest calls, on a series with the same first bar, so paper and backtest agree by construction.

Evaluating the whole buffer at every bar would cost O(n²) in a long replay. Strategies are causal — the value at bar
``i`` uses bars ≤ ``i`` only, bit for bit, which ``backfarm strategies check`` verifies — so when later bars are
already in memory (a replay) one evaluation over ``buffer[0 : i + chunk]`` yields the targets of the next ``chunk``
bars exactly as ``chunk`` separate evaluations would. Live, the buffer ends at the bar just closed, so every close
is one evaluation. All strategies of a symbol share one :class:`Indicators` per evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backfarm.core.jobs import Params
from backfarm.paper.bars import BarBuffer
from backfarm.strategies.base import Strategy
from backfarm.strategies.indicators import Indicators

DEFAULT_CHUNK = 2048
"""Bars evaluated at once in a fast replay: one O(n) evaluation per chunk instead of per bar."""


class SymbolSignals:
    """Targets of every strategy on one symbol's buffer, evaluated at most once per bar (or per chunk)."""

    def __init__(self, buffer: BarBuffer, strategies: Sequence[tuple[Strategy, Params]], chunk: int = 1) -> None:
        self.buffer = buffer
        self.strategies = list(strategies)
        self.chunk = max(1, chunk)
        self._values: list[np.ndarray] = []
        self._upto = 0

    def targets(self, i: int) -> list[float]:
        """Each strategy's target for buffer bar ``i`` (raw exposure values; the account cleans them)."""
        if i >= self._upto:
            self._evaluate(i)
        return [float(v[i]) for v in self._values]

    def _evaluate(self, i: int) -> None:
        upto = min(max(i + 1, i + self.chunk), self.buffer.known)
        if upto <= i:
            raise IndexError(f"bar {i} is not in the buffer ({self.buffer.known} bars)")
        indicators = Indicators(self.buffer.candles(upto))
        self._values = []
        for strategy, params in self.strategies:
            values = np.asarray(strategy.exposure(indicators, params), dtype=np.float64)
            if values.shape != (upto,):
                raise ValueError(f"strategy {strategy.name} returned {values.shape} values for {upto} bars")
            self._values.append(values)
        self._upto = upto
