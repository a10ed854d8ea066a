"""Sweep specs: what to run, from CLI flags or a TOML/JSON file, validated and expanded into jobs.

A spec names strategies (each with explicit parameter sets, its default grid, or its defaults), symbols, a
granularity, a period (``days`` back from today 00:00 UTC, or ``start``/``end``), optional walk-forward windows
(``window``/``step``), costs, capital and source. :func:`expand` checks every name and rule *before* any work starts and
turns the spec into jobs; nothing is stored or enqueued for a spec that does not validate.

The period for ``days = N`` is ``[today 00:00 UTC − N days, today 00:00 UTC)``: whole closed days, so the same command
gives the same job ids all day long and a rerun reuses every stored result.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import product
from pathlib import Path
from typing import Any

from backfarm.candles.schema import GRANULARITIES, granularity_seconds
from backfarm.engine.costs import Costs
from backfarm.errors import ConfigError, ValidationError, did_you_mean
from backfarm.strategies.base import Params, Strategy
from backfarm.strategies.registry import get_strategy, strategy_names
from backfarm.sweeps.jobs import Job, iso, parse_iso, short_hash

DEFAULT_STRATEGIES = ("momentum", "mean_reversion", "breakout", "ma_crossover", "volatility")
DEFAULT_SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD", "LINK-USD", "POL-USD")
QUICK = {"strategies": ("momentum", "mean_reversion", "breakout"), "symbols": ("BTC-USD", "ETH-USD"), "days": 7}
MAX_JOBS = 2_000_000
"""A guard against typos such as ``--window 1m`` over years of data."""

_DURATION = re.compile(r"^\s*(\d+)\s*(m|h|d|w)\s*$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class SweepSpec:
    """A sweep before expansion. ``params`` maps a strategy to explicit parameter sets (overrides of its defaults)."""

    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    granularity: str = "1m"
    days: int | None = 30
    start: str | None = None
    end: str | None = None
    window: str | None = None
    step: str | None = None
    grid: bool = False
    params: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    fee_bps: float | None = None
    spread_bps: float | None = None
    slippage_bps: float | None = None
    stop_loss_bps: float | None = None
    take_profit_bps: float | None = None
    capital: float = 10_000.0
    source: str = "coinbase"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored with the sweep so it can be rerun)."""
        data = asdict(self)
        data["strategies"] = list(self.strategies)
        data["symbols"] = list(self.symbols)
        return data

    def costs(self) -> Costs:
        """The cost model, defaults filled in (a bad value is a ValidationError)."""
        given = {
            "fee_bps": self.fee_bps,
            "spread_bps": self.spread_bps,
            "slippage_bps": self.slippage_bps,
            "stop_loss_bps": self.stop_loss_bps,
            "take_profit_bps": self.take_profit_bps,
        }
        try:
            return Costs(**{k: v for k, v in given.items() if v is not None})
        except (ValueError, ValidationError) as exc:
            raise ValidationError(f"--{exc}") from None


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


def split_list(text: str | None) -> tuple[str, ...]:
    """``"a, b,,c"`` → ``("a", "b", "c")``."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def parse_params(items: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Parse ``--params`` values: ``strategy:key=value,key=value``; ``;`` separates strategies in one value.

    A value may list alternatives with ``|`` (``fast=5|10|20``); their product gives several parameter sets. A
    strategy named more than once gets each parameter set.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        for part in item.split(";"):
            part = part.strip()
            if not part:
                continue
            name, sep, body = part.partition(":")
            if not sep or not name.strip():
                raise ValidationError(f"--params must look like 'strategy:key=value,key=value', got {part!r}")
            keys: list[str] = []
            choices: list[list[str]] = []
            for pair in split_list(body):
                key, eq, value = pair.partition("=")
                if not eq or not key.strip() or not value.strip():
                    raise ValidationError(f"--params: expected key=value in {part!r}, got {pair!r}")
                keys.append(key.strip())
                choices.append([v.strip() for v in value.split("|") if v.strip()])
            sets = [dict(zip(keys, combo, strict=True)) for combo in product(*choices)] if keys else [{}]
            out.setdefault(name.strip(), []).extend(sets)
    return out


def load_spec_file(path: Path) -> dict[str, Any]:
    """Read a sweep spec from TOML or JSON (keys as in :class:`SweepSpec`; ``params`` as a table per strategy)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read spec file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    known = set(SweepSpec.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: {did_you_mean('spec key', unknown[0], known)}")
    for key in ("strategies", "symbols"):
        if isinstance(data.get(key), str):
            data[key] = split_list(data[key])
        if key in data:
            data[key] = tuple(data[key])
    params = data.get("params", {})
    if isinstance(params, Mapping):
        data["params"] = {k: (v if isinstance(v, list) else [v]) for k, v in params.items()}
    return data


def spec_from(base: Mapping[str, Any] | None = None, **flags: Any) -> SweepSpec:
    """A spec from a file's values overlaid with the flags that were given (``None`` = not given)."""
    values: dict[str, Any] = dict(base or {})
    for key, value in flags.items():
        if value is None:
            continue
        if key == "params":
            merged = dict(values.get("params", {}))
            merged.update(value)
            value = merged
        values[key] = value
    if values.get("start") or values.get("end"):
        values.setdefault("days", None)
        if "days" not in flags or flags.get("days") is None:
            values["days"] = None
    try:
        return SweepSpec(**values)
    except TypeError as exc:
        raise ConfigError(f"bad sweep spec: {exc}") from None


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
            for params in sets:
                jobs.append(
                    Job(
                        strategy=strategy.name,
                        strategy_version=strategy.version,
                        params=params,
                        symbol=symbol,
                        granularity=spec.granularity,
                        start=w_start,
                        end=w_end,
                        source=spec.source,
                        costs=costs,
                        capital=float(spec.capital),
                    )
                )
    return Expansion(spec=replace(spec), jobs=tuple(jobs), windows=tuple(spans))


def _check_names(spec: SweepSpec) -> None:
    if spec.granularity not in GRANULARITIES:
        raise ValidationError(did_you_mean("granularity", spec.granularity, GRANULARITIES))
    if spec.capital <= 0:
        raise ValidationError(f"--capital must be positive, got {spec.capital:g}")
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


def _days(days: int) -> int:
    if days <= 0:
        raise ValidationError(f"--days must be a positive number of days, got {days}")
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
