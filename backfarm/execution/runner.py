"""Run one batch: load its candles once, build indicators once, run every job, return their results as one table.

This is the single place where a job becomes a result; the embedded executor and the Celery task both call
:func:`run_batch`, so the two paths cannot drift apart.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from numba.core.dispatcher import Dispatcher

from backfarm._util.ids import canonical_json
from backfarm._util.time import NS_PER_SECOND
from backfarm.candles.memo import CandleMemo
from backfarm.core.candles import Candles, bars_per_year
from backfarm.core.costs import Costs
from backfarm.core.jobs import Batch, Job
from backfarm.core.results import ResultRecord, round_and_hash, round_metric
from backfarm.core.versions import ENGINE_VERSION
from backfarm.engine.artifacts import artifacts
from backfarm.engine.backtest import run_backtest
from backfarm.engine.downsample import MAX_POINTS
from backfarm.engine.returns import blocks_for, daily_artifact
from backfarm.errors import ConfigError
from backfarm.results import columns
from backfarm.results.rows import stored_row
from backfarm.strategies.builtins import BUILTINS
from backfarm.strategies.indicators import Indicators
from backfarm.strategies.registry import copy_differs, get_strategy


@dataclass
class BatchOutcome:
    """Results of the jobs that ran (one table, :mod:`backfarm.results.columns`), and why each job that failed did."""

    results: pa.Table = field(default_factory=columns.SCHEMA.empty_table)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def run_batch(batch: Batch, memo: CandleMemo, skip: set[str] | None = None) -> BatchOutcome:
    """Run every job of ``batch`` not in ``skip``; a job whose strategy raises is reported failed, not fatal."""
    candles, indicators = memo.get(batch.data_key)
    jobs = [job for job in batch.jobs if not skip or job.job_id not in skip]
    return run_jobs(jobs, candles, indicators, batch.curves)


def run_jobs(jobs: Sequence[Job], candles: Candles, indicators: Indicators, curves: bool = True) -> BatchOutcome:
    """Run ``jobs`` (all on ``candles``, sharing ``indicators``) into one table: what :func:`run_batch` does once it
    has the window."""
    started = time.perf_counter()
    outcome = BatchOutcome()
    if not jobs:
        return outcome
    rows = columns.Builder()
    shared = _Shared(candles, jobs[0])
    for job in jobs:
        try:
            _add(rows, job, candles, indicators, curves, shared)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken strategy must not take the batch down
            if type(exc).__name__ == "SoftTimeLimitExceeded":
                raise  # Celery's soft limit: the task must stop now, not record a per-job failure
            if (interrupt := _interrupt_behind(exc)) is not None:
                raise interrupt from None
            outcome.failed[job.job_id] = f"{type(exc).__name__}: {exc}"[:500]
    outcome.results = rows.table()
    outcome.seconds = time.perf_counter() - started
    return outcome


def _interrupt_behind(exc: BaseException) -> BaseException | None:
    """The Ctrl-C (or exit) hidden behind ``exc``, if any.

    A SIGINT that arrives while a compiled numba function runs surfaces as ``SystemError: CPUDispatcher(...) returned
    a result with an exception set`` caused by the KeyboardInterrupt; treating that as the job's failure would
    swallow the interrupt (the run would carry on and mark the job dead).
    """
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 16:
        if not isinstance(current, Exception):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def run_job(job: Job, candles: Candles, indicators: Indicators, curves: bool = True) -> ResultRecord:
    """One backtest as a result record (with its equity curve and trades in ``extra`` when ``curves``): the same row
    :func:`run_batch` stores, read back."""
    rows = columns.Builder()
    _add(rows, job, candles, indicators, curves, _Shared(candles, job))
    return columns.records(rows.table())[0]


class _Shared:
    """What every job of a batch has in common, computed once: the candles' checksum, the costs as JSON, the days
    the daily returns are cut into."""

    def __init__(self, candles: Candles, job: Job) -> None:
        self.checksum = candles.checksum
        self.bars, self.gaps = len(candles), candles.gaps
        self.blocks = blocks_for(int(candles.ts[0]) // NS_PER_SECOND, candles.bar_seconds, len(candles))
        self.costs_of = job.costs
        self.costs = canonical_json(job.costs.to_dict())

    def costs_json(self, costs: Costs) -> str:
        """``costs`` as canonical JSON (the batch's own, or computed for a job that differs)."""
        return self.costs if costs == self.costs_of else canonical_json(costs.to_dict())


def _add(
    rows: columns.Builder, job: Job, candles: Candles, indicators: Indicators, curves: bool, shared: _Shared
) -> None:
    """Backtest ``job`` and add its result to ``rows``."""
    differs = copy_differs(job.strategy, job.strategy_version)
    if differs is not None:
        raise ConfigError(f"{differs}; give every machine the same backfarm, plugins and strategy files")
    strategy = get_strategy(job.strategy)
    exposure = strategy.exposure(indicators, job.params)
    result = run_backtest(
        candles.open,
        candles.high,
        candles.low,
        candles.close,
        exposure,
        job.costs,
        job.capital,
        bars_per_year(candles.bar_seconds),
        record=curves,  # the equity curve and trades feed the stored artifacts (backfarm.engine.artifacts)
        curve_points=MAX_POINTS,  # only the points the stored curve keeps
        blocks=shared.blocks,
    )
    metrics, digest = round_and_hash(result.metrics, shared.checksum, ENGINE_VERSION)
    fields = (
        "backtest",
        job.strategy,
        job.strategy_version,
        _params_json(job.params),
        job.symbol,
        job.granularity,
        job.start,
        job.end,
        job.source,
        shared.costs_json(job.costs),
        job.capital,
        shared.checksum,
        ENGINE_VERSION,
        shared.bars,
        shared.gaps,
    )  # the fields of rows.IDENTITY[1:], in order
    pictures = artifacts(result, candles, raw=True) if curves else {}
    equity, trades = pictures.get("equity"), pictures.get("trades")
    moments = {name: round_metric(value) for name, value in (result.moments or {}).items()}
    # The daily returns are kept with --no-curves too: they are statistics later analyses need, not a picture.
    per_block = result.block_returns
    daily = daily_artifact(per_block, shared.blocks, raw=True) if per_block is not None else None
    rows.append(stored_row(job.job_id, digest, fields, time.time(), metrics, moments, equity, trades, daily, None))


def _params_json(params: Mapping[str, Any]) -> str:
    """A job's parameters as the ``params`` column holds them: key-sorted JSON (orjson: a tenth of the standard
    encoder's time; the text is only ever parsed back, never hashed, so its spelling of a float may differ)."""
    return orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()


def kernels_compiled() -> bool:
    """Whether numba's on-disk cache holds backfarm's kernels for the current sources (else the next
    :func:`warm_up` compiles them: ~20 s, more on a busy machine).

    A kernel counts when its cache index exists and matches its source; helpers that only ever compile inside
    another kernel have no index of their own and are skipped, and a fresh install has no index at all. Best effort:
    numba has no public API for this, so a numba whose cache looks different counts as compiled (nothing is
    announced, nothing breaks).
    """
    inspectable = found = False
    for module in [m for name, m in sys.modules.items() if name.startswith("backfarm.")]:
        for obj in list(vars(module).values()):
            if not isinstance(obj, Dispatcher):
                continue
            index: Any = getattr(getattr(obj, "_cache", None), "_cache_file", None)
            path = getattr(index, "_index_path", None)
            if path is None or not hasattr(index, "_load_index"):
                continue
            inspectable = True
            if not os.path.exists(path):
                continue
            found = True
            try:
                if not index._load_index():  # {} when its source changed since
                    return False
            except (OSError, EOFError, ValueError, TypeError):
                return False
    return found or not inspectable


def warm_up() -> None:
    """Load (or compile) every numba kernel the built-ins and the engine use, on a small in-memory series.

    Run once per process before real work (and before forking) so no batch pays compilation or cache loading.
    Strategy files and plugins are left out: their code runs only for their own jobs (an error in it must fail those
    jobs, not the start of a worker).
    """
    n = 400
    rng = np.random.default_rng(0)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    start = datetime(2020, 1, 1, tzinfo=UTC)
    ts = np.array([int((start + timedelta(minutes=i)).timestamp()) * 10**9 for i in range(n)], dtype=np.int64)
    candles = Candles("synthetic", "WARM-USD", "1m", ts, open_, high, low, close, np.ones(n))
    indicators = Indicators(candles)
    for name in ("sma", "stdev", "ema", "zscore", "highest", "lowest", "roc", "rsi", "atr"):
        getattr(indicators, name)(10)  # every indicator a strategy (a built-in or the user's own) may ask for
    costs = Costs(stop_loss_bps=100.0, take_profit_bps=100.0)
    for strategy in (cls() for cls in BUILTINS):
        for params in [strategy.resolve({}), *list(strategy.default_grid())[:1]]:
            exposure = strategy.exposure(indicators, params)
            run_backtest(open_, high, low, close, exposure, costs, 1000.0, 525600.0)
            for points in (0, 100):  # 400 bars: a full curve, and one cut to 100 points in the kernel
                recorded = run_backtest(
                    open_, high, low, close, exposure, Costs(), 1000.0, 525600.0, record=True, curve_points=points
                )
                artifacts(recorded, candles)  # loads the artifact kernels too
