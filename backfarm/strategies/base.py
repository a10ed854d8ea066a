"""The strategy contract: a causal, vectorized function from candles and parameters to target exposure.

A strategy returns, for every bar t, the fraction of equity it wants invested after seeing bar t's close: a float in
[0, 1] (long-only spot). The engine trades toward it at bar t+1's open. The value at bar t may use only bars ≤ t;
``backfarm strategies check`` verifies that mechanically by truncating the series. The same function serves
backtests (whole window at once) and paper trading (a rolling buffer at each bar close), so the two agree by
construction.

Indicators come from :class:`backfarm.strategies.indicators.Indicators`, which memoizes them per candle window:
every parameter set of a batch on the same window shares them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from backfarm.core.jobs import Params, ParamValue
from backfarm.errors import ValidationError, did_you_mean

if TYPE_CHECKING:
    from backfarm.strategies.indicators import Indicators


@dataclass(frozen=True)
class Param:
    """A typed parameter: a default, inclusive bounds ``[low, high]``, the values of the default grid, and how a search
    may move inside the bounds (``step``: only multiples of it from ``low``; ``log``: sample on a log scale).

    ``grid`` left empty is the default alone. A declaration that breaks its own bounds (a default or grid value
    outside them, a step that is not positive, a log scale reaching 0) is a ``ValueError`` when the class is made.
    """

    name: str
    kind: type[int] | type[float]
    default: ParamValue
    low: ParamValue
    high: ParamValue
    grid: tuple[ParamValue, ...] = ()
    help: str = ""
    step: ParamValue | None = None
    log: bool = False

    def __post_init__(self) -> None:
        if self.kind not in (int, float):
            raise ValueError(f"parameter {self.name}: kind must be int or float, got {self.kind!r}")
        if not self.grid:
            object.__setattr__(self, "grid", (self.default,))
        object.__setattr__(self, "grid", tuple(self.grid))
        if not self.low <= self.high:
            raise ValueError(f"parameter {self.name}: low {self.low} is above high {self.high}")
        for value in (self.default, *self.grid):
            if not self.low <= value <= self.high:
                raise ValueError(f"parameter {self.name}: {value} is outside its bounds [{self.low}, {self.high}]")
            if self.kind is int and not float(value).is_integer():
                raise ValueError(f"parameter {self.name}: {value} is not an integer")
        if self.step is not None and not self.step > 0:
            raise ValueError(f"parameter {self.name}: step must be positive, got {self.step}")
        if self.log and not self.low > 0:
            raise ValueError(f"parameter {self.name}: a log scale needs low > 0, got {self.low}")

    def coerce(self, strategy: str, raw: object) -> ParamValue:
        """Parse and bound-check one value; errors name the strategy and parameter."""
        where = f"{strategy}:{self.name}"
        try:
            if self.kind is int:
                as_float = float(str(raw))
                if not as_float.is_integer():
                    raise ValueError
                value: ParamValue = int(as_float)
            else:
                value = float(str(raw))
                if not math.isfinite(value):
                    raise ValueError
        except ValueError:
            kind = "an integer" if self.kind is int else "a number"
            raise ValidationError(f"parameter {where} must be {kind}, got {raw!r}") from None
        if not self.low <= value <= self.high:
            raise ValidationError(f"parameter {where}={value} is outside [{self.low}, {self.high}]")
        return value


@dataclass(frozen=True)
class Rule:
    """A constraint across parameters, e.g. ``fast < slow``; ``text`` is what the error shows."""

    text: str
    check: Callable[[Params], bool] = field(compare=False)


class Strategy(ABC):
    """Base class of every strategy. Subclasses set the class attributes and implement :meth:`exposure`.

    The class docstring is the strategy's rule in one paragraph; ``backfarm strategies list`` shows it.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    """Bump it when the rule changes; strategy files are also identified by a hash of their code."""
    params: ClassVar[tuple[Param, ...]] = ()
    rules: ClassVar[tuple[Rule, ...]] = ()

    @abstractmethod
    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        """Target exposure in [0, 1] per bar (float64, same length as the candles); bar t uses bars ≤ t only."""

    def warmup(self, p: Params) -> int:
        """Bars of history the strategy needs before its signal means anything (paper trading warms up this much)."""
        ints = [int(v) for v in p.values() if isinstance(v, int)]
        return max(ints, default=1) + 1

    @classmethod
    def describe(cls) -> str:
        """The one-paragraph rule (the class docstring, whitespace-normalised)."""
        return " ".join((cls.__doc__ or "").split())

    @classmethod
    def param(cls, name: str) -> Param:
        """Look up a parameter by name, with a suggestion when it is unknown."""
        for p in cls.params:
            if p.name == name:
                return p
        raise ValidationError(did_you_mean(f"parameter for {cls.name}", name, [p.name for p in cls.params]))

    @classmethod
    def resolve(cls, given: Mapping[str, object] | None = None) -> Params:
        """Defaults overlaid with ``given`` (parsed, bound-checked), then every rule checked."""
        values: Params = {p.name: p.default for p in cls.params}
        for key, raw in (given or {}).items():
            values[key] = cls.param(key).coerce(cls.name, raw)
        for rule in cls.rules:
            if not rule.check(values):
                shown = ", ".join(f"{k}={v}" for k, v in values.items())
                raise ValidationError(f"{cls.name}: parameters break the rule '{rule.text}' ({shown})")
        return values

    @classmethod
    def default_grid(cls) -> Iterator[Params]:
        """Every combination of the parameters' grid values that satisfies the rules, in a stable order."""
        names = [p.name for p in cls.params]
        for combo in product(*(p.grid for p in cls.params)):
            values: Params = dict(zip(names, combo, strict=True))
            if all(rule.check(values) for rule in cls.rules):
                yield values


ExposureFunction = Callable[["Indicators", Params], "np.ndarray | Sequence[float]"]
"""What :func:`strategy` decorates: ``(indicators, params) -> exposure per bar``."""


class FunctionStrategy(Strategy):
    """A strategy made by :func:`strategy` from a plain function."""

    function: ClassVar[ExposureFunction]
    warmup_function: ClassVar[Callable[[Params], int] | None] = None

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        return np.asarray(type(self).function(ind, p), dtype=np.float64)

    def warmup(self, p: Params) -> int:
        custom = type(self).warmup_function
        return super().warmup(p) if custom is None else int(custom(p))


def strategy(
    name: str,
    *,
    params: Sequence[Param] = (),
    rules: Sequence[Rule] = (),
    version: str = "1",
    warmup: Callable[[Params], int] | None = None,
) -> Callable[[ExposureFunction], type[Strategy]]:
    """Make a strategy from a function of ``(indicators, params)`` returning the exposure per bar, with its parameters
    declared beside it; the function's docstring is the strategy's rule. The decorated name is the strategy class::

        @strategy("rsi_dip", params=[Param("period", int, 14, 2, 200, (7, 14, 21))])
        def rsi_dip(ind, p):
            \"\"\"Long while the RSI is below 30.\"\"\"
            return (ind.rsi(p["period"]) < 30).astype(float)

    ``warmup`` gives the bars of history a parameter set needs (default: the largest integer parameter + 1).
    """

    def make(function: ExposureFunction) -> type[Strategy]:
        attrs: dict[str, object] = {
            "name": name,
            "version": version,
            "params": tuple(params),
            "rules": tuple(rules),
            "function": staticmethod(function),
            "warmup_function": None if warmup is None else staticmethod(warmup),
            "__doc__": function.__doc__,
            "__module__": function.__module__,
            "__qualname__": getattr(function, "__qualname__", function.__name__),
        }
        cls = type(function.__name__, (FunctionStrategy,), attrs)
        cls.__backfarm_function__ = function  # type: ignore[attr-defined]  # where the loader finds its line
        return cls

    return make
