"""The result store at farm scale (``backfarm bench --store``): what a store of a million results costs a sweep and a
reader, what a result costs on disk, and whether storing results holds the executor back.

- **No slowdown with size.** A store of ``--store-size`` results (the standard sweep's results, tiled under new job
  ids with their metrics nudged so rankings have few ties) is built through the store's own ``put`` and compacted.
  Then the standard sweep runs with a new fee each round (so new job ids) into a fresh empty store and into the big
  one, alternately (A B A B ...), and the medians of the two end-to-end rates are compared.
- **Readers.** ``backfarm leaderboard --all --top 20`` by several metrics and ``leaderboard --by strategy`` (the
  latest sweep) run as processes of their own against the big store, alternating with ``backfarm --version``: the
  difference of the medians is what reading a million results adds to a command. Their peak memory is recorded.
- **Bytes per result**: every file of the compacted store (index, facts, pictures) over the results it holds.
- **Storage is not the bottleneck.** A 10,000-job sweep (the standard grid × 5 symbols × 8 windows of 30 days) runs
  end to end on the embedded executor, alternately with the same batches computed by the same number of processes
  with nothing built or stored (indicators, signals, kernel, metrics).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from backfarm._util.cpu import default_workers
from backfarm.candles.memo import CandleMemo
from backfarm.config import Settings
from backfarm.core.candles import bars_per_year
from backfarm.core.jobs import Batch, make_batches
from backfarm.core.results import SweepRecord
from backfarm.engine.backtest import run_backtest
from backfarm.execution.local import LocalExecutor
from backfarm.execution.runner import run_batch, warm_up
from backfarm.results import compaction, rows
from backfarm.results.embedded import EmbeddedStore
from backfarm.results.redis_store import RedisStore
from backfarm.strategies.registry import get_strategy
from backfarm.sweeps.run import expand_spec, prepare_data, run_sweep
from benchmarks.common import BenchmarkFailed, Plan, stats
from tests.redis_server import RedisServer

PUT_ROWS = 20_000
"""Results per ``put`` while building the big store."""
REDIS_PUT_ROWS = 92
"""Results per ``put`` while building the big Redis store: a worker's batch."""
READER_METRICS = ("sharpe", "total_return", "max_drawdown", "trades")
"""Metrics the top-20 reader is timed with ("by any metric": floats up and down, and an integer with many ties)."""


def bench_store(plan: Plan, settings: Settings, progress: Callable[[str], None]) -> dict[str, Any]:
    """Every store measurement of the plan (see the module's docstring)."""
    out: dict[str, Any] = {"size": plan.store_size}
    big_dir = settings.data_dir / "big"
    big_settings = replace(settings, data_dir=big_dir)
    progress(f"store: building a store of {plan.store_size:,} results")
    out["build"] = _in_child(_build, plan, settings, big_settings.store_path)
    progress("store: the standard sweep into an empty store and into the big one, alternately")
    out["sweep_into"] = _sweep_rounds(plan, settings, big_settings.store_path)
    progress("store: leaderboards at this size as commands of their own")
    out["readers"] = _readers(plan, big_dir)
    with EmbeddedStore(big_settings.store_path) as store:
        compaction.compact(store.parts)
        out["bytes_per_result"] = _live_bytes(store) / store.count()[0]
        out["results"] = store.count()[0]
    shutil.rmtree(big_dir, ignore_errors=True)
    progress("store: a 10,000-job sweep end to end vs computed with nothing stored, alternately")
    out["storage_vs_compute"] = _storage_vs_compute(plan, settings)
    if shutil.which("redis-server"):
        progress(f"store: Redis with {plan.store_size:,} results")
        out["redis"] = _redis_store(plan, settings)
    return out


def _in_child(work: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``work(*args)`` in a forked process (its memory goes with it: this process's peak stays a sweep's)."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def run() -> None:
        send.send(work(*args))

    child = context.Process(target=run)
    child.start()
    result = receive.recv()
    child.join()
    if child.exitcode != 0:
        raise BenchmarkFailed(f"{work.__name__} exited {child.exitcode}")
    return dict(result)


# --- the big store ------------------------------------------------------------------------------------------------


def _template(plan: Plan, settings: Settings) -> pa.Table:
    """The standard sweep's results as one table (computed here, in this process)."""
    expansion = expand_spec(plan.spec(fee_bps=7.0), settings)
    prepare_data(expansion, settings)
    memo = CandleMemo(settings)
    tables = [run_batch(batch, memo).results for batch in make_batches(expansion.jobs, 92)]
    return pa.concat_tables(tables)


def _build(plan: Plan, settings: Settings, root: Path) -> dict[str, Any]:
    """Fill the store at ``root`` with ``plan.store_size`` results through ``put``, then compact it."""
    template = _template(plan, settings)
    floats = [rows.metric_column(m) for m in ("total_return", "sharpe", "sortino", "calmar", "max_drawdown")]
    started = time.perf_counter()
    made = 0
    with EmbeddedStore(root, auto_compact=False) as store:
        tile = 0
        while made < plan.store_size:
            chunk: list[pa.Table] = []
            while sum(t.num_rows for t in chunk) < min(PUT_ROWS, plan.store_size - made):
                chunk.append(_tiled(template, tile, floats))
                tile += 1
            data = pa.concat_tables(chunk).slice(0, min(PUT_ROWS, plan.store_size - made))
            store.put(data)
            made += data.num_rows
        put_s = time.perf_counter() - started
        started = time.perf_counter()
        report = compaction.compact(store.parts)
        compact_s = time.perf_counter() - started
        parts = store.parts.totals()[0]
    return {"results": made, "put_s": put_s, "compact_s": compact_s, "merges": report.merges, "parts": parts}


def _tiled(template: pa.Table, tile: int, floats: Sequence[str]) -> pa.Table:
    """``template`` under new job ids, its float metrics nudged by a tile-dependent factor (fewer exact ties)."""
    ids = pa.array([f"bench{tile:07d}{row:012d}" for row in range(template.num_rows)])
    data = template.set_column(template.schema.get_field_index("job_id"), "job_id", ids)
    factor = 1.0 + (tile % 9973) * 1e-7
    for name in floats:
        at = data.schema.get_field_index(name)
        data = data.set_column(at, name, pc.multiply(data.column(name), factor))
    return data


def _live_bytes(store: EmbeddedStore) -> int:
    """Bytes of the files a reader of ``store`` may open: the index, visible facts, and every pictures file."""
    with store.parts.snapshot() as db:
        visible = store.parts.visible(db)
    size = sum(store.parts.facts(part).stat().st_size for part in visible)
    size += sum(path.stat().st_size for path in store.parts.dir.glob("*.pictures.parquet"))
    return size + sum(path.stat().st_size for path in store.root.glob("index.sqlite*"))


# --- sweeps into an empty and a big store -------------------------------------------------------------------------


def _sweep_rounds(plan: Plan, settings: Settings, big: Path) -> dict[str, Any]:
    """The standard sweep with a new fee each round, into a fresh empty store and into ``big``, alternately."""
    empty_root = settings.data_dir / "empty-store"
    rates: dict[str, list[float]] = {"empty": [], "big": []}
    rounds = max(5, plan.repeats)
    for r in range(rounds):
        spec = plan.spec(fee_bps=8.0 + r / 100)
        for label in ("empty", "big"):
            if label == "empty":
                shutil.rmtree(empty_root, ignore_errors=True)
            root = empty_root if label == "empty" else big
            with EmbeddedStore(root) as store:
                started = time.perf_counter()
                outcome = run_sweep(spec, settings, store, LocalExecutor(settings, None))
                wall = time.perf_counter() - started
            if outcome.stats.computed != outcome.total:
                raise BenchmarkFailed(f"a store round computed {outcome.stats.computed} of {outcome.total} jobs")
            rates[label].append(outcome.total / wall)
    shutil.rmtree(empty_root, ignore_errors=True)
    empty, big_rates = stats(rates["empty"]), stats(rates["big"])
    return {
        "jobs": outcome.total,
        "empty_backtests_per_s": empty,
        "big_backtests_per_s": big_rates,
        "ratio": big_rates["median"] / empty["median"],
    }


# --- readers as commands --------------------------------------------------------------------------------------------


def _readers(plan: Plan, data_dir: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Each reader command and ``backfarm --version``, alternately, as processes of their own (on the embedded store
    in ``data_dir``, or on the Redis ``env`` names)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = env or {**os.environ, "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}
    env = {**env, "BACKFARM_DATA_DIR": str(data_dir)}
    commands: dict[str, list[str]] = {"version": ["--version"]}
    for metric in READER_METRICS:
        commands[f"top20 --all by {metric}"] = ["leaderboard", "--all", "--top", "20", "--metric", metric]
    commands["by strategy, latest sweep"] = ["leaderboard", "--by", "strategy"]
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    peaks: dict[str, float] = {}
    for _ in range(max(5, plan.repeats)):
        for name, args in commands.items():
            wall, peak = _run_command(args, env)
            seconds[name].append(wall)
            peaks[name] = max(peaks.get(name, 0.0), peak)
    base = statistics.median(seconds["version"])
    out: dict[str, Any] = {"version_s": stats(seconds["version"]), "commands": {}}
    for name in commands:
        if name != "version":
            out["commands"][name] = {
                "seconds": stats(seconds[name]),
                "over_version_s": statistics.median(seconds[name]) - base,
                "peak_mb": peaks[name],
            }
    out["worst_over_version_s"] = max(row["over_version_s"] for row in out["commands"].values())
    out["peak_mb"] = max(peaks.values())
    return out


_LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.executable, [sys.executable, "-m", "backfarm", *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - started, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""
"""Runs a command and reports its wall time, peak memory and exit code: a small process in between, because a
child of this (large) process would count this process's memory as its own peak (Linux keeps a task's peak across
``exec``)."""


def _run_command(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``backfarm ARGS`` to completion: (wall seconds, peak resident MiB)."""
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, *args], env=env, capture_output=True, text=True)
    try:
        wall, peak_kib, code = done.stdout.split()
    except ValueError:
        raise BenchmarkFailed(f"could not time `backfarm {' '.join(args)}`: {done.stderr.strip()[:300]}") from None
    if int(code) != 0:
        raise BenchmarkFailed(f"`backfarm {' '.join(args)}` exited {code}: {done.stderr.strip()[:300]}")
    return float(wall), int(peak_kib) / 1024


# --- the Redis store ------------------------------------------------------------------------------------------------


def _redis_store(plan: Plan, settings: Settings) -> dict[str, Any]:
    """The Redis store at ``plan.store_size`` results (private servers): bytes per result, the server's CPU per
    committed result in a big and an empty Redis (alternately, batches as workers commit them), and the readers."""
    table = _template(plan, settings)
    template = table.to_pydict()
    out: dict[str, Any] = {}
    with RedisServer() as big, RedisServer() as empty:
        before = _used_memory(big)
        out["build_s"] = _in_child(_fill_redis, big.url, table, plan.store_size)["seconds"]
        with RedisStore(big.url) as store:
            results = int(store.conn.client.hlen(store.keys.jobs))
        out["results"] = results
        out["bytes_per_result"] = (_used_memory(big) - before) / results
        cpu: dict[str, list[float]] = {"empty": [], "big": []}
        for r in range(max(5, plan.repeats)):
            for label, server in (("empty", empty), ("big", big)):
                cpu[label].append(_commit_cpu(server, template, f"round{r}{label}"))
        out["cpu_us_per_result_empty"] = stats(cpu["empty"])
        out["cpu_us_per_result_big"] = stats(cpu["big"])
        out["cpu_ratio"] = out["cpu_us_per_result_big"]["median"] / out["cpu_us_per_result_empty"]["median"]
        with RedisStore(big.url) as store:
            ids = template["job_id"]
            store.create_sweep(SweepRecord("bench-latest", time.time(), {}, tuple(f"round0big{i}" for i in ids), ""))
        env = {**os.environ, "BACKFARM_REDIS_URL": big.url, "COLUMNS": "200"}
        out["readers"] = _readers(plan, settings.data_dir / "redis-readers", env)
    return out


def _used_memory(server: RedisServer) -> int:
    client = server.client()
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def _fill_redis(url: str, template: pa.Table, size: int) -> dict[str, Any]:
    """Put ``size`` results (the template tiled under new ids, metrics nudged as in the embedded store's build) in
    commits of :data:`REDIS_PUT_ROWS`, as workers make them."""
    started = time.perf_counter()
    floats = [rows.metric_column(m) for m in ("total_return", "sharpe", "sortino", "calmar", "max_drawdown")]
    with RedisStore(url) as store:
        made, tile = 0, 0
        while made < size:
            data = _tiled(template, tile, floats).slice(0, size - made)
            for i in range(0, data.num_rows, REDIS_PUT_ROWS):
                store.put(data.slice(i, REDIS_PUT_ROWS))
            made += data.num_rows
            tile += 1
    return {"seconds": time.perf_counter() - started}


def _commit_cpu(server: RedisServer, template: dict[str, list[Any]], tag: str) -> float:
    """Microseconds of the server's CPU per result to commit the template's results under new ids (``tag``), in
    batches of 92 as workers commit them."""
    columns = {**template, "job_id": [f"{tag}{i}" for i in template["job_id"]]}
    n = len(columns["job_id"])
    with RedisStore(server.url) as store:
        client = store.conn.client
        start = client.info("cpu")
        for i in range(0, n, 92):
            store.put(_Columns({name: values[i : i + 92] for name, values in columns.items()}))
        end = client.info("cpu")
    used = sum(end[k] - start[k] for k in ("used_cpu_sys", "used_cpu_user"))
    return used / n * 1e6


class _Columns(dict[str, list[Any]]):
    """A batch as columns, handed to ``put`` the way a worker's Arrow table is (anything with ``to_pydict``)."""

    def to_pydict(self) -> dict[str, list[Any]]:
        return dict(self)


# --- storage vs compute -----------------------------------------------------------------------------------------------


def _storage_vs_compute(plan: Plan, settings: Settings) -> dict[str, Any]:
    """A 10,000-job sweep end to end, alternately with its batches computed and nothing stored."""
    spec = plan.spec(days=8 * plan.days, window=f"{plan.days}d", step=f"{plan.days}d", fee_bps=9.0)
    expansion = expand_spec(spec, settings)
    prepare_data(expansion, settings)
    workers = default_workers()
    batches = make_batches(expansion.jobs, 92)
    root = settings.data_dir / "storage-store"
    stored: list[float] = []
    computed: list[float] = []
    for _ in range(max(3, plan.repeats)):
        shutil.rmtree(root, ignore_errors=True)
        with EmbeddedStore(root) as store:
            started = time.perf_counter()
            outcome = run_sweep(spec, settings, store, LocalExecutor(settings, workers))
            stored.append(outcome.total / (time.perf_counter() - started))
        if outcome.stats.computed != outcome.total:
            raise BenchmarkFailed(f"the 10,000-job sweep computed {outcome.stats.computed} of {outcome.total} jobs")
        started = time.perf_counter()
        done = _compute_only(batches, settings, workers)
        computed.append(done / (time.perf_counter() - started))
    shutil.rmtree(root, ignore_errors=True)
    # Once more as `backfarm backtest` runs it, for its peak memory (the command's process and its pool's).
    env = {**os.environ, "BACKFARM_DATA_DIR": str(settings.data_dir), "BACKFARM_REDIS_URL": ""}
    flags = ["--grid", "--source", "synthetic", "--symbols", ",".join(plan.symbols), "--days", str(8 * plan.days)]
    flags += ["--window", f"{plan.days}d", "--step", f"{plan.days}d", "--fee-bps", "9.5", "--top", "0"]
    if plan.strategies:
        flags += ["--strategies", plan.strategies]
    _, peak = _run_command(["backtest", *flags], env)
    shutil.rmtree(settings.store_path, ignore_errors=True)
    end_to_end, compute = stats(stored), stats(computed)
    return {
        "jobs": len(expansion.jobs),
        "workers": workers,
        "end_to_end_backtests_per_s": end_to_end,
        "compute_only_backtests_per_s": compute,
        "ratio": end_to_end["median"] / compute["median"],
        "command_peak_mb": peak,
    }


def _compute_only(batches: Sequence[Batch], settings: Settings, workers: int) -> int:
    """Compute every job of ``batches`` in ``workers`` processes (this one and forked children, taking batches in
    turn as the executor does): indicators, signals, kernel and metrics, nothing recorded, built or stored."""
    warm_up()
    memo = CandleMemo(settings)
    memo.prepare_for_fork()
    context = multiprocessing.get_context("fork")
    counter = context.Value("q", 0)
    done = context.Value("q", 0)
    children = [context.Process(target=_compute_share, args=(batches, memo, counter, done)) for _ in range(workers - 1)]
    for child in children:
        child.start()
    _compute_share(batches, memo, counter, done)
    for child in children:
        child.join()
        if child.exitcode != 0:
            raise BenchmarkFailed(f"a compute-only process exited {child.exitcode}")
    return int(done.value)


def _compute_share(
    batches: Sequence[Batch], memo: CandleMemo, counter: Synchronized[int], done: Synchronized[int]
) -> None:
    """Take batches in turn until none is left; count the jobs computed."""
    while True:
        with counter.get_lock():
            at = counter.value
            counter.value += 1
        if at >= len(batches):
            return
        batch = batches[at]
        candles, indicators = memo.get(batch.data_key)
        year = bars_per_year(candles.bar_seconds)
        for job in batch.jobs:
            exposure = get_strategy(job.strategy).exposure(indicators, job.params)
            run_backtest(candles.open, candles.high, candles.low, candles.close, exposure, job.costs, job.capital, year)
        with done.get_lock():
            done.value += len(batch.jobs)
