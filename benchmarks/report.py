"""The benchmark report for people: one section per measurement, ratios and targets last."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape

from benchmarks.common import Stats


def fmt_stats(stats: Stats, unit: str = "/s", digits: int = 0) -> str:
    return (
        f"{stats['median']:,.{digits}f}{unit} (min {stats['min']:,.{digits}f}, max {stats['max']:,.{digits}f}, "
        f"{stats['runs']} runs)"
    )


def print_report(report: dict[str, Any], console: Console) -> None:
    """The report for people: one section per measurement, ratios and targets last."""
    out = functools.partial(console.print, markup=True)  # the report's own styles; its text is ours
    cfg = report["config"]
    out(
        f"[bold]backfarm bench[/] · {report['machine']['cores']} cores · {cfg['jobs']:,} jobs "
        f"({cfg['strategies']} strategies, default grids) × {len(cfg['symbols'])} symbols × {cfg['days']} days of "
        f"1m bars ({cfg['bars']:,}) · synthetic candles · medians of {cfg['repeats']} runs"
    )
    out(f"start-up kept out of the timings: kernels {report['warm_up_s']:.2f} s, candles {report['data_s']:.2f} s")
    pc = report["per_core"]
    out("\n[bold]per core[/] (one process, one symbol, indicators shared in a batch, artifacts included, no store):")
    for name, row in pc["strategies"].items():
        out(f"  {name:<16}{row['grid']:>4} params  {fmt_stats(row['us_per_backtest'], ' µs', 0)}")
    floor = pc["memory_floor"]
    out(
        f"  all: {pc['us_per_backtest']:,.0f} µs/backtest = {pc['backtests_per_s']:,.0f}/s; memory floor (reading "
        f"o/h/l/c once): {floor['us_per_backtest']:,.0f} µs = {floor['backtests_per_s']:,.0f}/s"
    )
    sc = report["screen"]
    out(f"\n[bold]the seeds' {sc['jobs']}-backtest screen[/] (warm, in-process): {fmt_stats(sc['seconds'], ' s', 3)}")
    out("\n[bold]standard sweep, embedded executor[/] (executor: pool start, backtests, store commits):")
    for row in report["embedded"]:
        out(
            f"  {row['workers']} worker(s): {fmt_stats(row['backtests_per_s'])}; end to end (validation, data, "
            f"manifest) {row['end_to_end_backtests_per_s']['median']:,.0f}/s"
        )
    lean = report.get("embedded_no_curves")
    if lean:
        out(
            f"  {lean['workers']} worker(s), --no-curves (no equity curves and trades stored): "
            f"{fmt_stats(lean['backtests_per_s'])}"
        )
    mem = report["memory"]
    out(f"  peak memory: parent {_mb(mem['parent_peak_mb'])}, largest pool process {_mb(mem['child_peak_mb'])}")
    _print_scaling(report.get("days_scaling"), console)
    _print_references(report.get("references"), console)
    _print_farm(report.get("farm"), console)
    _print_store(report.get("store"), console)
    out("\n[bold]ratios[/]")
    for name, value in report["ratios"].items():
        out(f"  {name:<32}{'—' if value is None else f'{value:,.2f}×'}")
    out("\n[bold]targets[/]")
    for name, row in report["targets"].items():
        verdict = "not measured" if row["met"] is None else ("[green]met[/]" if row["met"] else "[red]missed[/]")
        value = "—" if row["value"] is None else f"{row['value']:,.3g}" if row["value"] < 10 else f"{row['value']:,.0f}"
        out(f"  {name:<32}{value:>12}  (target {row['target']:,.2f})  {verdict}")


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} MiB"


def _print_scaling(scaling: dict[str, Any] | None, console: Console) -> None:
    if not scaling:
        return
    out = functools.partial(console.print, markup=True)  # the report's own styles; its text is ours
    out("\n[bold]scaling with bars[/] (one symbol, every grid, all cores):")
    for row in scaling["rows"]:
        out(
            f"  {row['days']:>4} days ({row['bars']:>7,} bars): {fmt_stats(row['seconds'], ' s', 3)} · "
            f"{row['us_per_backtest']:,.0f} µs/backtest · time ×{row['time_ratio']:.2f} "
            f"for bars ×{row['bars_ratio']:.2f}"
        )


def _print_references(refs: dict[str, Any] | None, console: Console) -> None:
    if not refs:
        return
    out = functools.partial(console.print, markup=True)  # the report's own styles; its text is ours
    out(f"\n[bold]SMA-crossover part[/] ({refs['params']} params × {refs['symbols']} symbols = {refs['jobs']} jobs):")
    ours = refs["backfarm"]
    out(f"  {'backfarm, one process, results not stored:':<46} {fmt_stats(ours['one_process_backtests_per_s'])}")
    out(f"  {'backfarm, embedded executor, results stored:':<46} {fmt_stats(ours['embedded_backtests_per_s'])}")
    for key, label in (("vectorbt", "vectorbt"), ("backtesting_py", "backtesting.py")):
        row = refs[key]
        if not row.get("available"):
            out(f"  {label + ':':<46} {escape(row['reason'])}")  # e.g. "pip install 'backfarm[bench]'": not markup
            continue
        match = "trade counts match" if row["trades_match"] else f"{row['trade_mismatches']} trade counts differ"
        out(f"  {label + ' ' + row['version'] + ':':<46} {fmt_stats(row['backtests_per_s'], '/s', 1)} · {match}")


def _print_farm(farm: dict[str, Any] | None, console: Console) -> None:
    if not farm:
        return
    out = functools.partial(console.print, markup=True)  # the report's own styles; its text is ours
    where = "a private redis-server" if farm["private_redis"] else "the configured Redis"
    out(f"\n[bold]standard sweep, farm[/] (Celery + {where}, submit to seen complete, as `backfarm backtest` waits):")
    for row in farm["runs"]:
        out(
            f"  {row['workers']} worker process(es): {fmt_stats(row['backtests_per_s'])}; peak "
            f"{_mb(row['peak_mb_per_process'])} per process; --no-curves "
            f"{row['no_curves_backtests_per_s']['median']:,.0f}/s"
        )
        paired = row.get("embedded_alternating_backtests_per_s")
        if paired:
            label = f"the embedded executor alternating with it ({row['workers']} processes, end to end)"
            out(f"    {label}: {fmt_stats(paired)}")


def _print_store(store: dict[str, Any] | None, console: Console) -> None:
    if not store:
        return
    out = functools.partial(console.print, markup=True)  # the report's own styles; its text is ours
    build = store["build"]
    out(
        f"\n[bold]result store at {store['size']:,} results[/] (embedded; built through put in {build['put_s']:.0f} s, "
        f"compacted in {build['compact_s']:.0f} s into {build['parts']} parts):"
    )
    into = store["sweep_into"]
    out(
        f"  standard sweep ({into['jobs']:,} jobs, new ids each round), empty store: "
        f"{fmt_stats(into['empty_backtests_per_s'])}"
    )
    out(f"  the same into the big store: {fmt_stats(into['big_backtests_per_s'])} → ×{into['ratio']:.2f}")
    readers = store["readers"]
    out(f"  `backfarm --version`: {fmt_stats(readers['version_s'], ' s', 3)}")
    for name, row in readers["commands"].items():
        out(
            f"  `leaderboard {name}`: {fmt_stats(row['seconds'], ' s', 3)} → +{row['over_version_s']:.3f} s, "
            f"peak {_mb(row['peak_mb'])}"
        )
    size = store["bytes_per_result"]
    out(f"  on disk: {size:,.0f} bytes per result, pictures included ({store['results']:,} results)")
    work = store["storage_vs_compute"]
    out(
        f"  {work['jobs']:,}-job sweep on {work['workers']} processes, end to end: "
        f"{fmt_stats(work['end_to_end_backtests_per_s'])}"
    )
    out(f"  the same batches computed, nothing stored: {fmt_stats(work['compute_only_backtests_per_s'])}")
    out(f"  `backfarm backtest` of that sweep: peak {_mb(work['command_peak_mb'])} (its process and its pool's)")
    redis = store.get("redis")
    if redis:
        per = redis["bytes_per_result"]
        out(
            f"  Redis at {redis['results']:,} results (filled through put in {redis['build_s']:.0f} s): "
            f"{per:,.0f} bytes per result (2 GB hold {2 * 2**30 / per:,.0f})"
        )
        empty, big = redis["cpu_us_per_result_empty"], redis["cpu_us_per_result_big"]
        out(f"  Redis CPU per committed result (batches of 92), empty: {fmt_stats(empty, ' µs', 1)}")
        out(f"  the same at this size: {fmt_stats(big, ' µs', 1)} → ×{redis['cpu_ratio']:.2f}")
        for name, row in redis["readers"]["commands"].items():
            seconds = fmt_stats(row["seconds"], " s", 3)
            out(f"  on Redis, `leaderboard {name}`: {seconds} → +{row['over_version_s']:.3f} s")


def json_default(value: object) -> object:
    """numpy scalars as plain numbers in ``--json`` output."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
