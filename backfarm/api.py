"""backfarm from Python (notebooks, scripts): one backtest, a sweep as a DataFrame, the lookahead check.

::

    import backfarm.api as bf
    from backfarm import Param, strategy

    @strategy("dip", params=[Param("period", int, 14, 2, 200, (7, 14, 21))])
    def dip(ind, p):
        \"\"\"Long while the RSI is below 30.\"\"\"
        return (ind.rsi(p["period"]) < 30).astype(float)

    run = bf.backtest(dip, symbol="BTC-USD", days=7, source="synthetic")   # or bf.backtest(dip, data=df)
    run.metrics["sharpe"], run.trades, run.equity                          # a notebook shows ``run`` as a picture
    table = bf.sweep(["dip", "momentum"], symbols=["BTC-USD"], grid=True, days=7, source="synthetic")
    bf.check(dip).ok

Every function takes the same inputs as the CLI and goes through the same code (the sweep spec, its expansion,
:func:`backfarm.execution.runner.run_job`), so the numbers are the CLI's to the last digit. Settings come from the
``BACKFARM_*`` environment unless ``settings`` is given; ``redis`` (or ``BACKFARM_REDIS_URL``) runs a sweep on the
farm. Costs are a :class:`Costs` (``bf.Costs(fee_bps=10, stop_loss_bps=200)``; fields the CLI's cost flags).
A strategy given as a class is registered under its name first (a class edited and given again replaces it).
Errors are :class:`backfarm.errors.BackfarmError` subclasses with the CLI's one-line messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backfarm._util.time import NS_PER_SECOND, from_ns, iso
from backfarm.candles.checks import first_bad_bar
from backfarm.candles.load import fill_gaps
from backfarm.candles.memo import CandleMemo
from backfarm.config import Settings
from backfarm.core.candles import GRANULARITIES, Candles, bars_per_year
from backfarm.core.costs import Costs
from backfarm.core.jobs import Job
from backfarm.core.results import Filters, ResultRecord
from backfarm.dashboard.plot import plot_png
from backfarm.engine.backtest import run_backtest
from backfarm.errors import DataError, ValidationError
from backfarm.execution.local import LocalExecutor
from backfarm.execution.runner import run_job
from backfarm.farm.client import FarmExecutor
from backfarm.results.factory import open_store
from backfarm.results.rows import flat_row
from backfarm.strategies.base import Strategy
from backfarm.strategies.check import CheckReport, check_strategy
from backfarm.strategies.indicators import Indicators
from backfarm.strategies.registry import get_strategy, identity, load_paths, register
from backfarm.sweeps.lookahead import check_candles, gate
from backfarm.sweeps.run import expand_spec, run_sweep
from backfarm.sweeps.spec import SweepSpec

__all__ = ["Costs", "Run", "backtest", "check", "load_strategies", "sweep"]

StrategyLike = str | type[Strategy] | Strategy
"""A strategy by name, as a class, or as an instance of one."""
DATAFRAME_SOURCE = "dataframe"
"""The ``source`` of a backtest run on a DataFrame the caller passed."""


@dataclass(frozen=True)
class Run:
    """One backtest: its stored-form ``record`` (metrics, identity, downsampled curve) and the full series.

    ``equity`` is the account's value at each bar's close, indexed by the bar's open time (UTC); ``trades`` has one
    row per round trip (flat to flat) with its entry and exit bars and times, mean fill prices, quantity, profit,
    return and exit reason. In a notebook the run shows as its equity picture."""

    record: ResultRecord
    job: Job
    candles: Candles
    exposure: np.ndarray

    @property
    def metrics(self) -> dict[str, Any]:
        """Every metric by name (definitions: README "Metrics", :mod:`backfarm.engine.metrics`)."""
        return dict(self.record.metrics)

    @property
    def params(self) -> dict[str, Any]:
        """The parameter set that ran (defaults filled in)."""
        return dict(self.record.params)

    @cached_property
    def _full(self) -> Any:
        c = self.candles
        return run_backtest(
            c.open, c.high, c.low, c.close, self.exposure, self.job.costs, self.job.capital,
            bars_per_year(c.bar_seconds), record=True,
        )  # fmt: skip

    @property
    def equity(self) -> pd.Series:
        """Equity at every bar's close, indexed by the bar's open time."""
        return pd.Series(self._full.equity, index=_times(self.candles.ts), name="equity")

    @property
    def trades(self) -> pd.DataFrame:
        """Every round trip, in the order they closed."""
        trades = self._full.trades
        frame = pd.DataFrame(trades.to_records() if trades is not None else [], columns=_TRADE_COLUMNS)
        ts = self.candles.ts
        frame.insert(1, "entry_time", _times(ts[frame["entry_bar"].to_numpy(dtype=np.int64)]))
        frame.insert(3, "exit_time", _times(ts[frame["exit_bar"].to_numpy(dtype=np.int64)]))
        return frame

    def candles_frame(self) -> pd.DataFrame:
        """The candles the run used, as an OHLCV DataFrame indexed by each bar's open time (UTC); filled gaps are
        the flat bars with volume 0."""
        c = self.candles
        columns = {"open": c.open, "high": c.high, "low": c.low, "close": c.close, "volume": c.volume}
        return pd.DataFrame(columns, index=_times(c.ts))

    def plot(self, path: str | Path | None = None, width: int = 1200, height: int = 700) -> bytes:
        """The equity picture as PNG bytes (the dashboard's plot), also written to ``path`` if given."""
        png = plot_png(self.record, width, height)
        if path is not None:
            Path(path).write_bytes(png)
        return png

    def _repr_png_(self) -> bytes:
        return self.plot()

    def __repr__(self) -> str:
        m = self.record.metrics
        shown = ", ".join(f"{k}={m[k]:.4g}" for k in ("total_return", "sharpe", "max_drawdown") if m.get(k) is not None)
        return (
            f"Run({self.record.strategy} {self.params} on {self.record.symbol} {self.record.granularity} "
            f"{self.record.start}→{self.record.end}: {shown}, trades={m.get('trades')})"
        )


_TRADE_COLUMNS = ["entry_bar", "exit_bar", "entry_price", "exit_price", "qty", "pnl", "ret", "exit_reason"]


def load_strategies(*paths: str | Path) -> list[str]:
    """Load strategy files (``.py`` files or folders), as ``--strategy-path`` does; the names they define."""
    return load_paths([Path(p).expanduser().resolve() for p in paths])


def backtest(
    strategy: StrategyLike,
    data: pd.DataFrame | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    symbol: str = "BTC-USD",
    granularity: str | None = None,
    days: int | None = None,
    start: str | None = None,
    end: str | None = None,
    source: str = "coinbase",
    costs: Costs | None = None,
    capital: float = 10_000.0,
    settings: Settings | None = None,
) -> Run:
    """Backtest ``strategy`` with ``params`` (defaults for the rest) and ``costs`` (default: the CLI's, ``Costs()``).

    On ``data``, a DataFrame with ``open``, ``high``, ``low``, ``close`` (and optionally ``volume``) columns and a
    DatetimeIndex or a ``time`` column (UTC; naive means UTC) of regular bars: ``granularity`` is inferred when not
    given, missing bars are filled flat as for cached candles, and every bar must be sound. Without ``data``, on the
    candles of ``symbol`` over the window the CLI would use (``days``, or ``start``/``end``; default the last 30
    days) from ``source`` (coinbase, synthetic or file), cached as ``backfarm backtest`` caches them.
    """
    chosen = settings or Settings.from_env()
    name = _name_of(strategy)
    flags: dict[str, Any] = {"strategies": name, "params": [_params_flag(name, params or {})], "capital": capital}
    flags |= (costs or Costs()).to_dict()
    if data is not None:
        if any(v is not None for v in (days, start, end)):
            raise ValidationError("backtest: give data or a window (days, start, end), not both")
        candles = candles_from_frame(data, symbol, granularity)
        spec = SweepSpec.from_flags(flags)  # the CLI's parsing and checks of parameters and costs
        ((_, given),) = spec.params.items()
        job = Job(
            strategy=name,
            strategy_version=identity(name),
            params=get_strategy(name).resolve(given[0]),
            symbol=symbol,
            granularity=candles.granularity,
            start=iso(from_ns(int(candles.ts[0]))),
            end=iso(from_ns(int(candles.ts[-1]) + candles.bar_seconds * NS_PER_SECOND)),
            source=DATAFRAME_SOURCE,
            costs=spec.costs(),
            capital=float(spec.capital),
        )
        indicators = Indicators(candles)
    else:
        flags |= {"symbols": symbol, "granularity": granularity, "days": days, "start": start, "end": end}
        spec = SweepSpec.from_flags(flags | {"source": source})
        expansion = expand_spec(spec, chosen)
        if len(expansion.jobs) != 1:
            raise ValidationError(f"backtest: the window holds {len(expansion.jobs)} jobs; give one window")
        (job,) = expansion.jobs
        candles, indicators = CandleMemo(chosen).get(job.data_key)
    record = run_job(job, candles, indicators)
    exposure = get_strategy(name).exposure(indicators, job.params)
    return Run(record, job, candles, np.asarray(exposure, dtype=np.float64))


def sweep(
    strategies: str | Sequence[StrategyLike] | None = None,
    symbols: str | Sequence[str] | None = None,
    params: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    *,
    grid: bool = False,
    days: int | None = None,
    start: str | None = None,
    end: str | None = None,
    granularity: str | None = None,
    window: str | None = None,
    step: str | None = None,
    source: str | None = None,
    costs: Costs | None = None,
    capital: float | None = None,
    workers: int | None = None,
    redis: str | None = None,
    curves: bool = True,
    allow_lookahead: bool = False,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Run a sweep as ``backfarm backtest`` does (same defaults, same stored results, reused across runs) and return
    its results as a DataFrame, one row per job: identity, each parameter as a column (``param_<name>`` where a
    name clashes with a fixed column), every metric, ``params`` as JSON.

    ``params`` maps a strategy to its parameter sets (``{"momentum": [{"lookback": 30}, {"lookback": 60}]}``).
    Runs on the local process pool, or on the farm when ``redis`` (or ``BACKFARM_REDIS_URL``) is set: then it waits
    for the farm's workers. Strategy code that has not passed the lookahead check here is checked first, as in the
    CLI, and refused unless ``allow_lookahead``.
    """
    chosen = (settings or Settings.from_env()).with_(redis_url=redis)
    names = [_name_of(s) for s in ([strategies] if isinstance(strategies, str) else strategies or [])]
    flags: dict[str, Any] = {
        "strategies": ",".join(names) or None,
        "symbols": symbols if isinstance(symbols, str) or symbols is None else ",".join(symbols),
        "params": [_params_flag(name, p) for name, sets in (params or {}).items() for p in sets] or None,
        "grid": grid,
        "days": days,
        "start": start,
        "end": end,
        "granularity": granularity,
        "window": window,
        "step": step,
        "source": source,
        "capital": capital,
        **(costs or Costs()).to_dict(),
    }
    spec = SweepSpec.from_flags(flags)
    gate(chosen, spec.strategies, allow=allow_lookahead)
    with open_store(chosen) as store:
        executor = FarmExecutor(chosen) if chosen.redis_url else LocalExecutor(chosen, workers)
        outcome = run_sweep(spec, chosen, store, executor, curves=curves)
        records = list(store.iter_results(Filters(sweep=outcome.sweep_id)))
    return results_frame(records)


def check(
    strategy: StrategyLike,
    data: pd.DataFrame | None = None,
    *,
    params: Sequence[Mapping[str, Any]] | None = None,
    days: int = 5,
    symbol: str = "BTC-USD",
    cuts: int = 25,
    seed: int = 0,
    settings: Settings | None = None,
) -> CheckReport:
    """The lookahead check of ``strategy`` (as ``backfarm strategies check``): on ``data``, or on ``days`` of
    synthetic 1-minute candles of ``symbol`` ending today 00:00 UTC; ``report.ok`` and ``report.message`` say how
    it went, ``report.checked`` how many cuts were compared."""
    name = _name_of(strategy)
    if data is not None:
        candles = candles_from_frame(data, symbol, None)
    else:
        candles = check_candles(settings or Settings.from_env(), symbol, days)
    sets = [dict(p) for p in params] if params is not None else None
    return check_strategy(get_strategy(name), candles, sets, cuts=cuts, seed=seed)


def results_frame(records: Sequence[ResultRecord]) -> pd.DataFrame:
    """Results as rows: identity, a column per parameter, every metric (what ``backfarm results`` writes)."""
    return pd.DataFrame([flat_row(r) for r in records])


def candles_from_frame(data: pd.DataFrame, symbol: str, granularity: str | None) -> Candles:
    """Candles from an OHLC(V) DataFrame (see :func:`backtest`): regular bars, gaps filled flat, every bar sound."""
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    frame = data.rename(columns=str.lower)
    missing = [c for c in ("open", "high", "low", "close") if c not in frame.columns]
    if missing:
        raise DataError(f"data lacks the column(s) {', '.join(missing)} (it needs open, high, low, close)")
    if isinstance(frame.index, pd.DatetimeIndex):
        times = frame.index
    elif "time" in frame.columns or "timestamp" in frame.columns:
        times = pd.DatetimeIndex(pd.to_datetime(frame["time" if "time" in frame.columns else "timestamp"]))
    else:
        raise DataError("data needs a DatetimeIndex or a 'time' column with each bar's open time")
    times = times.tz_localize("UTC") if times.tz is None else times.tz_convert("UTC")
    ts = times.as_unit("ns").asi8.astype(np.int64)
    if len(ts) < 2:
        raise DataError(f"data holds {len(ts)} bars; a backtest needs at least 2")
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    if np.any(np.diff(ts) == 0):
        raise DataError("data has two bars with the same time")
    cols = {"ts": ts}
    for column in ("open", "high", "low", "close"):
        cols[column] = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)[order]
    volume = frame["volume"] if "volume" in frame.columns else pd.Series(np.zeros(len(ts)))
    cols["volume"] = volume.to_numpy(dtype=np.float64, na_value=np.nan)[order]
    bad = first_bad_bar(cols)
    if bad is not None:
        raise DataError(f"data bar {bad[0]} ({times[order[bad[0]]]}): {bad[1]}")
    step_ns = int(np.diff(ts).min())
    name = granularity or next((g for g, s in GRANULARITIES.items() if s * NS_PER_SECOND == step_ns), None)
    if name is None:
        raise DataError(f"data bars are {step_ns / NS_PER_SECOND:g} s apart; backfarm's bar sizes: "
                        f"{', '.join(GRANULARITIES)}")  # fmt: skip
    if name not in GRANULARITIES:
        raise ValidationError(f"unknown granularity {name!r} (choose from: {', '.join(GRANULARITIES)})")
    filled, gaps = fill_gaps(cols, GRANULARITIES[name] * NS_PER_SECOND)
    return Candles(
        DATAFRAME_SOURCE, symbol, name, filled["ts"], filled["open"], filled["high"], filled["low"],
        filled["close"], filled["volume"], gaps,
    )  # fmt: skip


def _name_of(strategy: StrategyLike) -> str:
    """The registered name of ``strategy``; a class (or an instance's class) not registered yet is registered."""
    if isinstance(strategy, str):
        get_strategy(strategy)
        return strategy
    cls = strategy if isinstance(strategy, type) else type(strategy)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ValidationError(f"not a strategy: {strategy!r} (give a name, a Strategy subclass or an instance)")
    try:
        if type(get_strategy(cls.name)) is cls:
            return cls.name
    except ValidationError:
        pass
    register(cls)
    return cls.name


def _params_flag(name: str, params: Mapping[str, Any]) -> str:
    """One parameter set as the CLI's ``--params`` value."""
    return f"{name}:" + ",".join(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _times(ts: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(ts, unit="ns", utc=True))
