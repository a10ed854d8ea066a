"""The candle sources by name: ``synthetic``, ``file`` and ``coinbase`` (the ``--source`` values)."""

from __future__ import annotations

from collections.abc import Callable

from backfarm.candles.cache import CandleCache
from backfarm.candles.sources.base import CandleSource
from backfarm.candles.sources.coinbase import CoinbaseSource
from backfarm.candles.sources.file import FileSource
from backfarm.candles.sources.synthetic import SyntheticSource
from backfarm.config import Settings
from backfarm.errors import ValidationError, did_you_mean

SOURCES: dict[str, Callable[[Settings], CandleSource]] = {
    "coinbase": CoinbaseSource.from_settings,
    "file": lambda settings: FileSource(CandleCache(settings.candles_dir)),
    "synthetic": lambda settings: SyntheticSource(seed=0),
}
"""Each source's name and how to build it from the settings."""


def get_source(name: str, settings: Settings) -> CandleSource:
    """The candle source called ``name``; an unknown name is a ``ValidationError`` with a suggestion."""
    try:
        make = SOURCES[name]
    except KeyError:
        raise ValidationError(did_you_mean("source", name, SOURCES)) from None
    return make(settings)
