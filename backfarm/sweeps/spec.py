"""Sweep specs: what to run, from CLI flags or a TOML/JSON file; :meth:`SweepSpec.from_flags` is the one place flags
become a spec.

A spec names strategies (each with explicit parameter sets, its default grid, or its defaults), symbols, a
granularity, a period (``days`` back from today 00:00 UTC, or ``start``/``end``), optional walk-forward windows
(``window``/``step``), costs, capital and source. :func:`backfarm.sweeps.expand.expand` checks every name and rule
*before* any work starts and turns the spec into jobs.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from itertools import product
from pathlib import Path
from typing import Any

from backfarm.core.costs import Costs, costs_from
from backfarm.errors import ConfigError, ValidationError, did_you_mean

DEFAULT_STRATEGIES = ("momentum", "mean_reversion", "breakout", "ma_crossover", "volatility")
DEFAULT_SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD", "LINK-USD", "POL-USD")
QUICK = {"strategies": ("momentum", "mean_reversion", "breakout"), "symbols": ("BTC-USD", "ETH-USD"), "days": 7}


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
        """The cost model, defaults filled in (a bad value is a ValidationError naming its flag)."""
        return costs_from(vars(self))

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any], spec_file: Path | None = None, quick: bool = False) -> SweepSpec:
        """The spec the user asked for: a spec file's values (if any), then ``--quick``'s, then the flags given.

        ``flags`` are the command's options by their spec names, as the CLI parsed them (``None``, ``False`` or an
        empty list = not given): ``strategies`` and ``symbols`` comma-separated, ``params`` a list of ``--params``
        values; every other name as :class:`SweepSpec` spells it. Parameter sets name their strategies: given
        without strategies (by flag or file), only the strategies they name run.
        """
        unknown = sorted(set(flags) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"not a sweep spec field: {', '.join(unknown)}")
        given: dict[str, Any] = {k: v for k, v in flags.items() if v is not None and v is not False and v != []}
        for key in ("strategies", "symbols"):
            if isinstance(given.get(key), str):
                given[key] = split_list(given[key]) or None
        if "params" in given:
            parsed = parse_params(given.pop("params"))
            if parsed:  # `--params ''` names nothing: as if not given
                given["params"] = parsed
        base: dict[str, Any] = load_spec_file(spec_file) if spec_file else {}
        if quick:
            base = {**base, **QUICK}
        if "strategies" not in given and "strategies" not in base and (given.get("params") or base.get("params")):
            given["strategies"] = params_strategies({**base.get("params", {}), **given.get("params", {})})
        return spec_from(base, **given)


def split_list(text: str | None) -> tuple[str, ...]:
    """``"a, b,,c"`` → ``("a", "b", "c")``."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def params_strategies(params: Mapping[str, Any]) -> tuple[str, ...]:
    """The strategies parameter sets name, in the order they first appear: what runs when no strategies are given."""
    return tuple(dict.fromkeys(params))


def parse_params(items: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Parse ``--params`` values: ``strategy:key=value,key=value``; ``;`` separates strategies in one value.

    A value may list alternatives with ``|`` (``fast=5|10|20``); their product gives several parameter sets. A
    strategy named more than once gets each parameter set; a key given twice in one set is an error (which value
    was meant?).
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
                if key.strip() in keys:
                    raise ValidationError(f"--params: {key.strip()} is given twice in {part!r}")
                keys.append(key.strip())
                choices.append([v.strip() for v in value.split("|") if v.strip()])
            sets = [dict(zip(keys, combo, strict=True)) for combo in product(*choices)] if keys else [{}]
            out.setdefault(name.strip(), []).extend(sets)
    return out


def load_spec_file(path: Path) -> dict[str, Any]:
    """Read a sweep spec from TOML or JSON (keys as in :class:`SweepSpec`; ``params`` as a table per strategy)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read spec file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a spec is TOML or JSON in UTF-8)") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a sweep spec") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a spec is a table of keys (TOML) or an object (JSON), got {type(data).__name__}")
    known = set(SweepSpec.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: {did_you_mean('spec key', unknown[0], known)}")
    return _typed(path, data)


class _Wrong(Exception):
    """A spec value of the wrong type; the message says what its key needs."""


def _names(value: Any) -> tuple[str, ...]:
    names = split_list(value) if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(v, str) for v in names):
        raise _Wrong("a list of names (or one comma-separated string)")
    return tuple(names)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Wrong("text")
    return value


def _when(value: Any) -> str:
    """A start/end as ISO text: text as given, a TOML date or date-time as ISO (UTC when it has no zone)."""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    raise _Wrong("a date like 2026-10-01 (or 2026-10-01T12:00:00Z)")


def _days(value: Any) -> int:
    if type(value) is not int:
        raise _Wrong("a whole number of days")
    return value


def _flag(value: Any) -> bool:
    if type(value) is not bool:
        raise _Wrong("true or false")
    return value


def _number(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _Wrong("a finite number")
    return float(value)


def _params(value: Any) -> dict[str, list[dict[str, Any]]]:
    if not isinstance(value, Mapping):
        raise _Wrong("a table of parameter sets per strategy")
    sets: dict[str, list[dict[str, Any]]] = {}
    for name, given in value.items():
        listed = given if isinstance(given, list) else [given]
        if not all(
            isinstance(one, Mapping) and all(type(v) in (int, float, str) for v in one.values()) for one in listed
        ):
            raise _Wrong(f"tables of parameter values (params.{name})")
        sets[name] = [dict(one) for one in listed]
    return sets


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert``, letting an explicit null (JSON) through as "not given"."""
    return lambda value: None if value is None else convert(value)


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "strategies": _names,
    "symbols": _names,
    "granularity": _text,
    "source": _text,
    "window": _optional(_text),
    "step": _optional(_text),
    "start": _optional(_when),
    "end": _optional(_when),
    "days": _optional(_days),
    "grid": _flag,
    "params": _params,
    "capital": _number,
    **{
        key: _optional(_number) for key in ("fee_bps", "spread_bps", "slippage_bps", "stop_loss_bps", "take_profit_bps")
    },
}
"""Each spec key's check and conversion (every key of :class:`SweepSpec`)."""


def _typed(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """A spec file's values checked for their types (``grid = "no"`` is not true, ``days = "two"`` is not a
    number) and brought to the spec's forms: lists of names as tuples, TOML dates as ISO text, parameter sets as
    lists. Anything else is one :class:`ConfigError` naming the key."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        try:
            out[key] = _CONVERT[key](value)
        except _Wrong as exc:
            raise ConfigError(f"{path}: {key} must be {exc}, got {value!r}"[:300]) from None
    return out


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (TOML refuses it itself; JSON would keep the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} is given twice")
        out[key] = value
    return out


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
