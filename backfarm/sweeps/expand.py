"""Expanding a sweep spec into jobs: the period, walk-forward windows, parameter sets, and every check before work.

:func:`expand` checks every name and rule *before* any work starts and turns the spec into jobs (strategy × parameter
set × symbol × window); nothing is stored or enqueued for a spec that does not validate. The period for ``days = N``
is ``[today 00:00 UTC − N days, today 00:00 UTC)``: whole closed days, so the same command gives the same job ids all
day long and a rerun reuses every stored result.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import product

from backfarm._util.ids import short_hash
from backfarm._util.time import iso, parse_iso
from backfarm.core.candles import GRANULARITIES, granularity_seconds
from backfarm.core.jobs import Job, Params
from backfarm.errors import ValidationError, did_you_mean
from backfarm.strategies.base import Strategy
from backfarm.strategies.registry import get_strategy, identity, strategy_names
from backfarm.sweeps.spec import SweepSpec

MAX_JOBS = 2_000_000
"""A guard against typos such as ``--window 1m`` over years of data."""

_DURATION = re.compile(r"^\s*(\d+)\s*(m|h|d|w)\s*$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Expansion:
    """The jobs of a spec, in a stable order, and the sweep id derived from them."""

    spec: SweepSpec
    jobs: tuple[Job, ...]
    windows: tuple[tuple[datetime, datetime], ...]

    @property
    def sweep_id(self) -> str:
        """Hash of the sorted job ids: the same work is the same sweep."""
        return short_hash(sorted(j.job_id for j in self.jobs), length=16)


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """``30m``, ``4h``, ``7d``, ``2w`` → timedelta; anything else is a ValidationError."""
    match = _DURATION.match(text or "")
    if not match or int(match.group(1)) <= 0:
        raise ValidationError(f"{what} must look like 30m, 4h, 7d or 2w (a positive number and a unit), got {text!r}")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def period(spec: SweepSpec, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The ``[start, end)`` the spec covers, validated."""
    now = now or datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if spec.start or spec.end:
        if spec.days is not None and spec.start and spec.end:
            raise ValidationError("give either --days or --start/--end, not both")
        end = _date(spec.end, "--end") if spec.end else today
        if spec.start:
            start = _date(spec.start, "--start")
        else:
            start = end - timedelta(days=_days(spec.days if spec.days is not None else 30))
        if spec.days is not None and spec.start and not spec.end:
            end = start + timedelta(days=_days(spec.days))
    else:
        end = today
        start = end - timedelta(days=_days(spec.days if spec.days is not None else 30))
    if start >= end:
        raise ValidationError(f"the period is empty: start {iso(start)} is not before end {iso(end)}")
    if end > now:
        raise ValidationError(f"the period ends in the future ({iso(end)}); the latest possible end is now")
    return start, end


def windows(start: datetime, end: datetime, window: str | None, step: str | None) -> list[tuple[datetime, datetime]]:
    """Walk-forward slices ``[s, s + window)`` every ``step`` (default: ``window``) inside ``[start, end)``."""
    if not window:
        if step:
            raise ValidationError("--step needs --window")
        return [(start, end)]
    size = parse_duration(window, "--window")
    stride = parse_duration(step, "--step") if step else size
    span = end - start
    if size > span:
        raise ValidationError(
            f"--window {window} is longer than the period ({_human(span)}: {iso(start)} to {iso(end)}); "
            "use a smaller --window or a longer --days"
        )
    out = []
    cursor = start
    while cursor + size <= end:
        out.append((cursor, cursor + size))
        cursor += stride
    return out


def expand(
    spec: SweepSpec,
    validate_symbol: Callable[[str], None] | None = None,
    now: datetime | None = None,
) -> Expansion:
    """Validate the spec and expand it into jobs: strategy × parameter set × symbol × window.

    ``validate_symbol`` comes from the candle source (unknown symbols get "did you mean").
    """
    _check_names(spec)
    costs = spec.costs()
    strategies = [get_strategy(name) for name in _unique(spec.strategies)]
    symbols = _unique(spec.symbols)
    for symbol in symbols:
        if validate_symbol is not None:
            validate_symbol(symbol)
    start, end = period(spec, now)
    spans = windows(start, end, spec.window, spec.step)
    bar = timedelta(seconds=granularity_seconds(spec.granularity))
    if spans[0][1] - spans[0][0] < 2 * bar:
        raise ValidationError(
            f"a window of {_human(spans[0][1] - spans[0][0])} holds fewer than 2 {spec.granularity} bars"
        )
    param_sets = [(strategy, _param_sets(spec, strategy)) for strategy in strategies]
    total = sum(len(s) for _, s in param_sets) * len(symbols) * len(spans)
    if total > MAX_JOBS:
        raise ValidationError(f"the sweep would have {total:,} jobs (limit {MAX_JOBS:,}); narrow it")
    jobs = []
    spans_iso = [(iso(a), iso(b)) for a, b in spans]  # formatted once per window, not once per job
    for symbol, (w_start, w_end) in product(symbols, spans_iso):
        for strategy, sets in param_sets:
            if not sets:
                continue
            first = Job(
                strategy=strategy.name,
                strategy_version=identity(strategy.name),
                params=sets[0],
                symbol=symbol,
                granularity=spec.granularity,
                start=w_start,
                end=w_end,
                source=spec.source,
                costs=costs,
                capital=float(spec.capital),
            )
            job_id = Job.id_maker(first)  # the shared fields encoded once per (symbol, window, strategy)
            jobs += [replace(first, params=params, job_id=job_id(params)) for params in sets]
    return Expansion(spec=replace(spec), jobs=tuple(jobs), windows=tuple(spans))


def _check_names(spec: SweepSpec) -> None:
    if spec.granularity not in GRANULARITIES:
        raise ValidationError(did_you_mean("granularity", spec.granularity, GRANULARITIES))
    if not 0 < spec.capital < math.inf:  # NaN fails too
        raise ValidationError(f"--capital must be a positive finite number, got {spec.capital:g}")
    if not spec.strategies:
        raise ValidationError("no strategies given")
    if not spec.symbols:
        raise ValidationError("no symbols given")
    for name in _unique(spec.strategies):
        get_strategy(name)
    for name in spec.params:
        if name not in spec.strategies:
            if name not in strategy_names():
                raise ValidationError(did_you_mean("strategy", name, strategy_names()))
            raise ValidationError(f"--params names {name}, which is not among --strategies {','.join(spec.strategies)}")


def _param_sets(spec: SweepSpec, strategy: Strategy) -> list[Params]:
    if strategy.name in spec.params:
        sets = [strategy.resolve(given) for given in spec.params[strategy.name]]
    elif spec.grid:
        sets = list(strategy.default_grid())
    else:
        sets = [strategy.resolve({})]
    return _unique_params(sets)


def _date(text: str, flag: str) -> datetime:
    try:
        return parse_iso(text)
    except ValueError:
        raise ValidationError(f"{flag} must be a date like 2026-10-01 or 2026-10-01T12:00:00Z, got {text!r}") from None


MAX_DAYS = 36_500
"""The longest period ``--days`` may ask for (a century: far more than any market's history)."""


def _days(days: int) -> int:
    if not 0 < days <= MAX_DAYS:
        raise ValidationError(f"--days must be a number of days from 1 to {MAX_DAYS:,}, got {days:,}")
    return days


def _human(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:g} days" if days >= 1 else f"{span.total_seconds() / 3600:g} hours"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _unique_params(sets: list[Params]) -> list[Params]:
    seen: dict[str, Params] = {}
    for params in sets:
        seen.setdefault(json.dumps(params, sort_keys=True), params)
    return list(seen.values())
