"""The lookahead check behind ``backfarm strategies check``: a strategy must not change its past when the future goes.

For each parameter set the exposure is computed on the full series and again on truncations ``candles[: t + 1]``
(each with fresh indicators): at **every** bar t of a window from the first bar of at least max(1,000, 3 × the
strategy's warm-up) bars (:func:`exhaustive_bars`), then at seeded random cut points over the rest plus fixed ones
near the end. Every value at bars ≤ t must be bit-for-bit identical; the smallest bar that differs over all cuts is
reported. Along the way the output contract is checked too: a float64 array of the right length, finite, in [0, 1],
and the same on two runs over the same candles.

A lookahead bug that peeks only one bar ahead shows only at the cut bar itself, so sampling alone would miss a
strategy that does so on a few bars (one that peeks on 1% of bars passed 33 sampled cuts ~70% of the time); cutting
at every bar of the window catches it wherever it happens there. The check is deterministic: the same candles,
parameters and seed give the same report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backfarm.core.candles import Candles
from backfarm.core.jobs import Params
from backfarm.errors import DataError, ValidationError
from backfarm.strategies.base import Strategy
from backfarm.strategies.indicators import Indicators

__all__ = ["CheckReport", "check_strategy", "cut_points"]

GRID_SAMPLES = 4
"""Default-grid points checked besides the defaults, spread evenly through the grid."""
EXHAUSTIVE_MIN = 1000
"""Every bar of at least this many from the first is a cut (and of three times the strategy's warm-up, if longer)."""


def exhaustive_bars(n: int, warmup: int, at_least: int = EXHAUSTIVE_MIN) -> int:
    """How many first bars of a series of ``n`` are each a cut: max(``at_least``, 3 × ``warmup``), at most n - 1
    (the full series itself is not a cut)."""
    return max(0, min(n - 1, max(at_least, 3 * warmup)))


@dataclass(frozen=True)
class CheckReport:
    """Outcome of :func:`check_strategy`. ``checked`` counts truncated-versus-full comparisons."""

    name: str
    ok: bool
    checked: int
    first_bad_bar: int | None
    params: Params | None
    message: str


class _Bad(Exception):
    """An output that breaks the contract; ``bar`` is where, when a bar is to blame."""

    def __init__(self, message: str, bar: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.bar = bar


def check_strategy(
    strategy: Strategy,
    candles: Candles,
    params: list[Params] | None = None,
    cuts: int = 25,
    seed: int = 0,
    every: int = EXHAUSTIVE_MIN,
) -> CheckReport:
    """Check ``strategy`` for lookahead and output-contract violations on ``candles``.

    ``params`` defaults to the strategy's defaults plus a few default-grid points; given ones are resolved (and
    validated) against the defaults. Per parameter set, every bar of the first :func:`exhaustive_bars` (at least
    ``every``; 0 turns this off, leaving the sampled cuts) is a cut, and ``cuts`` random cut points (seeded by
    ``seed``) plus the fixed ones of :func:`cut_points` are checked on top.
    """
    if cuts < 0:
        raise ValidationError(f"the number of cuts must be 0 or more, got {cuts}")
    if len(candles) < 2:
        raise DataError(f"checking a strategy needs at least 2 bars, got {len(candles)}")
    sets = _param_sets(strategy, params)
    checked = 0
    worst: tuple[_Bad, Params] | None = None
    for p in sets:
        count, bad = _check_params(strategy, candles, p, cuts, seed, every)
        checked += count
        if bad is not None and (worst is None or _rank(bad) < _rank(worst[0])):
            worst = (bad, p)
    if worst is None:
        message = f"ok: {checked} truncations of {len(candles)} bars agree, {len(sets)} parameter sets"
        return CheckReport(strategy.name, True, checked, None, None, message)
    bad, p = worst
    return CheckReport(
        strategy.name, False, checked, bad.bar, p, f"{bad.message}" + (f" (params {_show(p)})" if p else "")
    )


def cut_points(n: int, cuts: int, seed: int, warmup: int = 0) -> list[int]:
    """The sorted bars t at which a series of ``n`` bars is cut (keeping bars 0..t): ``cuts`` seeded random ones,
    plus 0, 1, 2, warmup - 2 .. warmup and n - 3, n - 2. The full series itself (t = n - 1) is never a cut."""
    last = n - 2
    points = {0, 1, 2, warmup - 2, warmup - 1, warmup, last - 1, last}
    if last >= 0 and cuts > 0:
        points.update(int(t) for t in np.random.default_rng(seed).integers(0, last + 1, size=cuts))
    return sorted(t for t in points if 0 <= t <= last)


def _param_sets(strategy: Strategy, params: list[Params] | None) -> list[Params]:
    """The given parameter sets, resolved; or the defaults plus up to GRID_SAMPLES evenly spread grid points."""
    if params is not None:
        return [strategy.resolve(p) for p in params]
    sets = [strategy.resolve()]
    grid = list(strategy.default_grid())
    if grid:
        for i in np.linspace(0, len(grid) - 1, min(GRID_SAMPLES, len(grid))).round().astype(int):
            if grid[i] not in sets:
                sets.append(grid[i])
    return sets


def _check_params(
    strategy: Strategy, candles: Candles, p: Params, cuts: int, seed: int, every: int
) -> tuple[int, _Bad | None]:
    """Comparisons made and the earliest violation for one parameter set."""
    n = len(candles)
    try:
        full = _run(strategy, candles, p)
        again = _run(strategy, candles, p)
    except _Bad as bad:
        return 0, bad
    differs = np.flatnonzero(full != again)
    if differs.size:
        return 0, _Bad(f"nondeterministic: exposure at bar {differs[0]} differs between two runs", int(differs[0]))
    checked = 0
    first: int | None = None
    warmup = strategy.warmup(p)
    window = exhaustive_bars(n, warmup, every) if every > 0 else 0
    for t in sorted(set(range(window)) | set(cut_points(n, cuts, seed, warmup))):
        if first == 0:
            break  # nothing can come earlier than bar 0
        try:
            part = _run(strategy, candles.slice(0, t + 1), p)
        except _Bad as bad:
            return checked, bad
        checked += 1
        differs = np.flatnonzero(part != full[: t + 1])
        if differs.size and (first is None or differs[0] < first):
            first = int(differs[0])
    if first is None:
        return checked, None
    return checked, _Bad(f"cheater: exposure at bar {first} changes when later bars are removed", first)


def _run(strategy: Strategy, candles: Candles, p: Params) -> np.ndarray:
    """The strategy's exposure on ``candles`` with fresh indicators, checked against the output contract."""
    n = len(candles)
    try:
        out = strategy.exposure(Indicators(candles), p)
    except Exception as exc:  # a crash on a short series is a finding, not a reason to stop the check
        error = " ".join(f"{type(exc).__name__}: {exc}".split())  # the report's message is one line
        raise _Bad(f"error: exposure raised {error} on the first {n} bars") from exc
    if not isinstance(out, np.ndarray):
        raise _Bad(f"bad output: exposure returned {type(out).__name__}, expected a numpy array")
    if out.shape != (n,):
        raise _Bad(f"bad output: exposure has shape {out.shape} for {n} bars, expected ({n},)")
    if out.dtype != np.float64:
        raise _Bad(f"bad output: exposure has dtype {out.dtype}, expected float64")
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise _Bad(f"bad output: exposure is {out[bad[0]]} at bar {bad[0]} on the first {n} bars", int(bad[0]))
    bad = np.flatnonzero((out < 0.0) | (out > 1.0))
    if bad.size:
        raise _Bad(f"bad output: exposure {out[bad[0]]} at bar {bad[0]} is outside [0, 1]", int(bad[0]))
    return out


def _rank(bad: _Bad) -> int:
    """Order violations: contract failures without a bar first, then by bar."""
    return -1 if bad.bar is None else bad.bar


def _show(p: Params) -> str:
    """``lookback=10, threshold=0.001``."""
    return ", ".join(f"{k}={v}" for k, v in p.items())
