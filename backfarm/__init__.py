"""backfarm: a distributed backtesting farm for crypto strategies."""

__version__ = "0.1.0"
