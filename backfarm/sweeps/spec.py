"""Sweep specs: what to run, from CLI flags or a TOML/JSON file; :meth:`SweepSpec.from_flags` is the one place flags
become a spec.

A spec names strategies (each with explicit parameter sets, its default grid, or its defaults), symbols, a
granularity, a period (``days`` back from today 00:00 UTC, or ``start``/``end``), optional walk-forward windows
(``window``/``step``), costs, capital and source. :func:`backfarm.sweeps.expand.expand` checks every name and rule
*before* any work starts and turns the spec into jobs.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
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
            given["params"] = parse_params(given["params"]) or None
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
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read spec file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys) if path.suffix == ".json" else tomllib.loads(text)
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
