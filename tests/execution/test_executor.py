"""The embedded executor's fork pool: every job stored once, failures marked dead, errors raised, from any store."""

from __future__ import annotations

import multiprocessing.process
import os
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from backfarm.config import Settings
from backfarm.core.jobs import Job, Params
from backfarm.core.results import SweepRecord
from backfarm.errors import ConfigError
from backfarm.execution import local
from backfarm.execution.local import plan_batches, run_local
from backfarm.results.embedded import EmbeddedStore
from backfarm.strategies import registry
from backfarm.strategies.base import Param, Strategy
from backfarm.strategies.indicators import Indicators
from backfarm.sweeps.expand import expand
from backfarm.sweeps.spec import SweepSpec


class Fragile(Strategy):
    """Test strategy: long when the close is above its 5-bar mean; raises for seed 3."""

    name: ClassVar[str] = "fragile_bench"
    version: ClassVar[str] = "1"
    params: ClassVar[tuple[Param, ...]] = (Param("seed", int, 0, 0, 100, tuple(range(12))),)

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        if p["seed"] == 3:
            raise ValueError("seed 3 is broken")
        return (ind.close > ind.sma(5)).astype(np.float64)


@pytest.fixture(scope="module", autouse=True)
def fragile() -> None:
    if "fragile_bench" not in registry.strategy_names():
        registry.register(Fragile)


def sweep(tmp_path: Path) -> tuple[Settings, list[Job], EmbeddedStore, str]:
    settings = Settings(data_dir=tmp_path / "data")
    spec = SweepSpec(strategies=("fragile_bench", "momentum"), symbols=("BTC-USD", "ETH-USD"), grid=True,
                     days=2, source="synthetic")  # fmt: skip
    expansion = expand(spec)
    store = EmbeddedStore(tmp_path / "results")
    store.create_sweep(SweepRecord(expansion.sweep_id, time.time(), {}, tuple(j.job_id for j in expansion.jobs), ""))
    return settings, list(expansion.jobs), store, expansion.sweep_id


@pytest.mark.parametrize("commit_rows", [200, 7])
def test_pool_stores_every_job_once_and_marks_failures_dead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commit_rows: int
) -> None:
    monkeypatch.setattr(local, "COMMIT_ROWS", commit_rows)  # 7: many small commits from both processes
    settings, jobs, store, sweep_id = sweep(tmp_path)
    progress: list[tuple[int, int]] = []
    stats = run_local(plan_batches(jobs, 2), store, settings, sweep_id, 2, lambda n, f: progress.append((n, f)))
    broken = {j.job_id for j in jobs if j.strategy == "fragile_bench" and j.params["seed"] == 3}
    assert len(broken) == 2  # one per symbol
    assert stats.computed == len(jobs) - 2 and stats.failed == 2 and not stats.interrupted
    assert sum(n for n, _ in progress) == len(jobs) and sum(f for _, f in progress) == 2
    assert set(store.manifest(sweep_id)) - store.existing(j.job_id for j in jobs) == broken
    assert set(store.dead(sweep_id)) == broken
    assert all("seed 3 is broken" in reason for reason in store.dead(sweep_id).values())
    info = store.sweep(sweep_id)
    assert info is not None and info.done == len(jobs) - 2 and info.dead == 2 and info.complete


def test_pool_results_equal_the_inline_run(tmp_path: Path) -> None:
    settings, jobs, store, _ = sweep(tmp_path)
    inline = EmbeddedStore(tmp_path / "inline")
    run_local(plan_batches(jobs, 1), inline, settings, None, 1)
    run_local(plan_batches(jobs, 2), store, settings, None, 2)

    def stored(s: EmbeddedStore) -> dict[str, tuple[dict[str, object], dict[str, object]]]:
        return {r.job_id: (r.metrics, r.extra) for r in s.iter_results()}

    assert stored(store) == stored(inline)
    assert len(stored(store)) == len(jobs) - 2


def test_a_configuration_error_in_a_child_is_raised_in_the_parent(tmp_path: Path) -> None:
    settings, jobs, store, _ = sweep(tmp_path)
    stale = [Job(**{**{f: getattr(j, f) for f in ("strategy", "params", "symbol", "granularity", "start", "end",
                                                   "source", "costs", "capital")}, "strategy_version": "0"})
             for j in jobs if j.strategy == "momentum"]  # fmt: skip
    with pytest.raises(ConfigError, match="version 1 here but the job wants 0"):
        run_local(plan_batches(stale, 2), store, settings, None, 2)


def test_other_stores_get_the_records_back(tmp_path: Path) -> None:
    """A store that is not the embedded SQLite store: children send their records back and the parent puts them."""
    settings, jobs, _, _ = sweep(tmp_path)
    store = EmbeddedStore(tmp_path / "other")
    puts: list[int] = []
    original = store.put

    def counting_put(records):  # type: ignore[no-untyped-def]
        puts.append(len(records))
        return original(records)

    store.put = counting_put  # type: ignore[method-assign]
    fake = type("Other", (), {"put": staticmethod(counting_put), "mark_dead": staticmethod(lambda *a: None)})()
    stats = run_local(plan_batches(jobs, 2), fake, settings, None, 2)  # type: ignore[arg-type]
    assert stats.computed == len(jobs) - 2
    assert sum(puts) == len(jobs) - 2 and len(store.existing(j.job_id for j in jobs)) == len(jobs) - 2


def test_child_errors_cross_the_pipe_as_json_and_keep_backfarm_classes() -> None:
    from backfarm.errors import DataError
    from backfarm.execution.local import _error_from

    rebuilt = _error_from({"type": "DataError", "message": "BTC-USD: 40% of bars missing"})
    assert isinstance(rebuilt, DataError) and str(rebuilt) == "BTC-USD: 40% of bars missing"
    other = _error_from({"type": "ZeroDivisionError", "message": "division by zero"})
    assert type(other) is RuntimeError and str(other) == "ZeroDivisionError: division by zero"
    assert isinstance(_error_from({"type": "KeyboardInterrupt", "message": ""}), KeyboardInterrupt)


class Doomed(Strategy):
    """Test strategy: kills any process it runs in but the test's own, which it slows down so the child surely takes
    a batch while the parent works on its first."""

    name: ClassVar[str] = "doomed_bench"
    version: ClassVar[str] = "1"
    params: ClassVar[tuple[Param, ...]] = (Param("seed", int, 0, 0, 100, tuple(range(40))),)
    parent: ClassVar[int] = 0

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        if os.getpid() != Doomed.parent:
            os._exit(7)
        time.sleep(0.02)
        return (ind.close > ind.sma(5)).astype(np.float64)


def test_a_pool_process_that_dies_is_reported_and_nothing_hangs(tmp_path: Path) -> None:
    if "doomed_bench" not in registry.strategy_names():
        registry.register(Doomed)
    Doomed.parent = os.getpid()
    settings = Settings(data_dir=tmp_path / "data")
    spec = SweepSpec(strategies=("doomed_bench",), symbols=("BTC-USD", "ETH-USD"), grid=True, days=2,
                     source="synthetic")  # fmt: skip
    jobs = list(expand(spec).jobs)
    store = EmbeddedStore(tmp_path / "results")
    with pytest.raises(RuntimeError, match=r"an executor process died \(exit code 7\)"):
        run_local(plan_batches(jobs, 2), store, settings, None, 2)


def test_the_parent_works_too_and_finished_children_are_not_waited_for(tmp_path: Path) -> None:
    """With 2 workers one child is forked; the parent computes batches as well (so both processes store results)."""
    settings, jobs, store, _ = sweep(tmp_path)
    forks: list[int] = []

    start = multiprocessing.process.BaseProcess.start

    def counting_start(self):  # type: ignore[no-untyped-def]
        forks.append(1)
        return start(self)

    pids: set[int] = set()
    run_batch = local.run_batch

    def recording_run_batch(batch, memo, skip=None):  # type: ignore[no-untyped-def]
        pids.add(os.getpid())
        return run_batch(batch, memo, skip)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(multiprocessing.process.BaseProcess, "start", counting_start)
        mp.setattr(local, "run_batch", recording_run_batch)
        stats = run_local(plan_batches(jobs, 2), store, settings, None, 2)
    assert len(forks) == 1
    assert os.getpid() in pids  # the parent ran batches (the child's pid is recorded in its own memory only)
    assert stats.computed == len(jobs) - 2
    assert len(store.existing(j.job_id for j in jobs)) == len(jobs) - 2


class Interrupted(Strategy):
    """Test strategy: fails the way numba reports a Ctrl-C that arrived inside a compiled function."""

    name: ClassVar[str] = "interrupted_bench"
    version: ClassVar[str] = "1"
    params: ClassVar[tuple[Param, ...]] = (Param("seed", int, 0, 0, 100, tuple(range(4))),)

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        if p["seed"] == 2:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as exc:
                raise SystemError("CPUDispatcher(<function f>) returned a result with an exception set") from exc
        return (ind.close > ind.sma(5)).astype(np.float64)


def test_a_ctrl_c_inside_compiled_code_interrupts_the_run_instead_of_failing_a_job(tmp_path: Path) -> None:
    if "interrupted_bench" not in registry.strategy_names():
        registry.register(Interrupted)
    settings = Settings(data_dir=tmp_path / "data")
    spec = SweepSpec(strategies=("interrupted_bench",), symbols=("BTC-USD",), grid=True, days=2, source="synthetic")
    jobs = list(expand(spec).jobs)
    store = EmbeddedStore(tmp_path / "results")
    stats = run_local(plan_batches(jobs, 1), store, settings, "s", 1)
    assert stats.interrupted
    assert stats.failed == 0 and not store.dead("s")
