"""Costs and risk exits of the fill model (DESIGN §5), all in basis points of notional or price."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from backfarm.errors import ValidationError

DEFAULT_FEE_BPS = 60.0
"""Coinbase Advanced's lowest-volume-tier taker fee, 0.60% per side."""
DEFAULT_SPREAD_BPS = 2.0
"""A modest full bid/ask spread; each side pays half of it."""


@dataclass(frozen=True)
class Costs:
    """Per-side fee, spread and slippage, plus optional stop-loss / take-profit distances.

    Buys fill at ``open × (1 + spread/2 + slippage)``, sells at ``open × (1 − spread/2 − slippage)``; the fee is
    ``fee × notional`` on each side. ``stop_loss_bps``/``take_profit_bps`` are distances from the average entry price.
    """

    fee_bps: float = DEFAULT_FEE_BPS
    spread_bps: float = DEFAULT_SPREAD_BPS
    slippage_bps: float = 0.0
    stop_loss_bps: float | None = None
    take_profit_bps: float | None = None

    def __post_init__(self) -> None:
        for name in _FIELDS:  # floats whatever was given: 10 and 10.0 are the same costs, and one job id
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        for name in ("fee_bps", "spread_bps", "slippage_bps"):
            value = getattr(self, name)
            if not 0.0 <= value < 5000.0:
                raise ValidationError(f"{name.replace('_', '-')} must be in [0, 5000), got {value}")
        for name in ("stop_loss_bps", "take_profit_bps"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 10000.0:
                raise ValidationError(f"{name.replace('_', '-')} must be in (0, 10000), got {value}")

    @property
    def fee(self) -> float:
        """Fee rate per side (fraction of notional)."""
        return self.fee_bps / 1e4

    @property
    def buy_markup(self) -> float:
        """Fraction added to the open price on a buy: half the spread plus slippage."""
        return (self.spread_bps / 2.0 + self.slippage_bps) / 1e4

    @property
    def sell_markdown(self) -> float:
        """Fraction taken off the price on a sell: half the spread plus slippage."""
        return self.buy_markup

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (part of the job id): what ``dataclasses.asdict`` gives for these flat fields, without its
        deep copy (25 µs a call, and a sweep's submit calls it for every job)."""
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Costs))

COST_FLAGS: tuple[str, ...] = _FIELDS
"""The cost flags (``--fee-bps`` ...): one per field of :class:`Costs`, spelled with dashes."""


def costs_from(values: Mapping[str, Any]) -> Costs:
    """The costs ``values`` gives (a mapping with the cost flags' names; absent or ``None`` = default); a bad value is
    a :class:`ValidationError` naming its flag."""
    given = {name: values[name] for name in COST_FLAGS if values.get(name) is not None}
    try:
        return Costs(**given)
    except (ValueError, ValidationError) as exc:
        raise ValidationError(f"--{exc}") from None
