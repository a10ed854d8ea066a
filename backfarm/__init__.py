"""backfarm: a distributed backtesting farm for crypto strategies; what strategy authors need imports from here.

from backfarm import Indicators, Param, Params, Rule, Strategy, strategy
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backfarm.core.jobs import Params, ParamValue
from backfarm.strategies.base import Param, Rule, Strategy, strategy

if TYPE_CHECKING:
    from backfarm.strategies.indicators import Indicators

__version__ = "0.3.0"

__all__ = ["Indicators", "Param", "ParamValue", "Params", "Rule", "Strategy", "__version__", "strategy"]


def __getattr__(name: str) -> Any:
    """``backfarm.Indicators`` on first use: it compiles numba kernels, which ``import backfarm`` must not pay for."""
    if name == "Indicators":
        from backfarm.strategies.indicators import Indicators

        return Indicators
    raise AttributeError(f"module 'backfarm' has no attribute {name!r}")
