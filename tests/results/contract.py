"""The result-store contract: plain test functions taking a ``store`` fixture, run once per store.

``tests/results/test_stores.py`` star-imports the ``test_*`` functions (see ``__all__``) and parametrizes
``store`` over every implementation, so SQLite and Redis are held to exactly the same expectations. Records are
small and hand-made (:func:`make_record`); expected orders and aggregates are computed by hand in each test.
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

import numpy as np
import pytest

from backfarm.core.results import METRICS, AggregateRow, Conflict, Filters, PutReport, ResultRecord, SweepRecord
from backfarm.engine.returns import blocks_for, daily_artifact, decode_daily
from backfarm.errors import ValidationError
from backfarm.results.store import ResultStore

DEFAULT_METRICS: dict[str, float | int | None] = {
    "total_return": 0.05,
    "cagr": 0.4,
    "volatility": 0.5,
    "sharpe": 1.0,
    "sortino": 1.2,
    "max_drawdown": -0.1,
    "calmar": 4.0,
    "trades": 4,
    "wins": 2,
    "win_rate": 0.5,
    "profit_factor": 1.5,
    "avg_trade": 0.0125,
    "exposure": 0.6,
    "turnover": 8.0,
    "fees_paid": 48.0,
}
assert set(DEFAULT_METRICS) == set(METRICS)


def make_record(
    job_id: str,
    *,
    strategy: str = "momentum",
    symbol: str = "BTC-USD",
    granularity: str = "1h",
    start: str = "2026-01-01T00:00:00Z",
    end: str = "2026-02-01T00:00:00Z",
    source: str = "synthetic",
    kind: str = "backtest",
    params: dict[str, int | float] | None = None,
    checksum: str = "c0ffee",
    created_at: float = 1_790_000_000.0,
    extra: dict[str, Any] | None = None,
    **metrics: float | int | None,
) -> ResultRecord:
    """A small result: default metrics overridden by keyword (``sharpe=None`` makes it undefined)."""
    unknown = set(metrics) - set(METRICS)
    assert not unknown, f"not metrics: {unknown}"
    return ResultRecord(
        job_id=job_id,
        strategy=strategy,
        strategy_version="1",
        params={"lookback": 20} if params is None else params,
        symbol=symbol,
        granularity=granularity,
        start=start,
        end=end,
        source=source,
        costs={"fee": 0.006, "half_spread": 0.0005, "slippage": 0.0},
        capital=10_000.0,
        metrics={**DEFAULT_METRICS, **metrics},
        candles_checksum=checksum,
        engine_version="1",
        bars=744,
        kind=kind,
        created_at=created_at,
        extra={} if extra is None else extra,
    )


def ids(records: list[ResultRecord]) -> list[str]:
    """Job ids in order."""
    return [r.job_id for r in records]


def sweep_record(sweep_id: str, job_ids: tuple[str, ...], created_at: float = 100.0, **spec: Any) -> SweepRecord:
    """A small sweep."""
    return SweepRecord(sweep_id, created_at, spec or {"strategies": ["momentum"]}, job_ids, "synthetic")


# --- put, get, existing, conflicts ------------------------------------------------------------------------------


def test_put_is_idempotent(store: ResultStore) -> None:
    a, b, c = make_record("a"), make_record("b"), make_record("c")
    assert store.put([a, b]) == PutReport(inserted=2)
    assert store.put([a, b]) == PutReport(duplicates=2)
    assert store.put([a, a, c]) == PutReport(inserted=1, duplicates=2)
    assert store.put([]) == PutReport()
    assert ids(list(store.iter_results())) == ["a", "b", "c"]
    assert ids(store.top("sharpe", 10)) == ["a", "b", "c"]
    assert store.aggregate("strategy")[0].results == 3


def test_same_job_twice_in_one_batch_is_one_row(store: ResultStore) -> None:
    a = make_record("a")
    assert store.put([a, a]) == PutReport(inserted=1, duplicates=1)
    assert ids(list(store.iter_results())) == ["a"]


def test_rerun_with_same_result_but_new_timestamp_is_a_duplicate(store: ResultStore) -> None:
    a = make_record("a", created_at=1.0)
    rerun = make_record("a", created_at=2.0, extra={"note": "rerun"})
    assert a.result_hash == rerun.result_hash
    store.put([a])
    assert store.put([rerun]) == PutReport(duplicates=1)
    assert store.get("a") == a
    assert store.conflicts() == []


def test_conflict_is_recorded_and_original_kept(store: ResultStore) -> None:
    original = make_record("a", sharpe=1.0)
    other = make_record("a", sharpe=1.1)
    third = make_record("a", sharpe=1.2, checksum="different")
    assert store.conflicts() == []
    store.put([original, make_record("b", sharpe=1.05)])
    before = time.time()
    assert store.put([other]) == PutReport(conflicts=1)
    after = time.time()
    assert store.get("a") == original
    assert ids(store.top("sharpe", 2)) == ["b", "a"]  # still ranked by the original 1.0
    [conflict] = store.conflicts()
    assert conflict == Conflict("a", original.result_hash, other.result_hash, conflict.at)
    assert before - 1 <= conflict.at <= after + 1
    # The same disagreement delivered again is reported, but recorded once; a new one is appended.
    assert store.put([other, third]) == PutReport(conflicts=2)
    found = store.conflicts()
    assert [(c.job_id, c.new_hash) for c in found] == [("a", other.result_hash), ("a", third.result_hash)]
    assert found[0].at <= found[1].at
    assert store.get("a") == original


def test_get_and_existing(store: ResultStore) -> None:
    store.put([make_record("j1"), make_record("j2")])
    assert store.get("nope") is None
    assert store.get("j1") == make_record("j1")
    assert store.existing(["j1", "j3", "j2", "j1"]) == {"j1", "j2"}
    assert store.existing(iter(["j3"])) == set()
    assert store.existing([]) == set()


def test_record_round_trips_exactly(store: ResultStore) -> None:
    record = make_record(
        "rt",
        params={"fast": 3, "slow": 30, "threshold": 0.1 + 0.2, "k": 1e-12},
        created_at=1_790_000_123.456789,
        extra={"equity": [10_000.0, 10_012.5, 9_999.999999999], "session": "ü-1", "nested": {"n": None}},
        total_return=1 / 3,
        sharpe=None,
        sortino=None,
        max_drawdown=-0.0,
        calmar=1.7976931348623157e308,
        win_rate=None,
        profit_factor=5e-324,
        trades=123_456_789,
        wins=61_728_394,
        fees_paid=0.1 + 0.7,
    )
    store.put([record])
    for back in (store.get("rt"), next(store.iter_results()), store.top("sharpe", 1)[0]):
        assert back == record
        assert back is not None
        assert type(back.params["fast"]) is int and type(back.params["threshold"]) is float
        assert back.params["threshold"] == 0.30000000000000004
        assert type(back.metrics["trades"]) is int
        assert back.metrics["sharpe"] is None
        assert back.result_hash == record.result_hash
        assert back.to_json() == record.to_json()


def test_moments_and_daily_returns_round_trip_exactly(store: ResultStore) -> None:
    returns = np.array([0.0125, -0.02, 0.0, 1 / 3, -1e-300])
    daily = daily_artifact(returns, blocks_for(1_790_000_000 - 1_790_000_000 % 86_400 + 600, 60, 5 * 1440 - 10))
    moments = {"mean": 1.25e-5, "std": 0.000454599024858, "skew": -6.87673250697, "kurt": None}
    record = dataclasses.replace(make_record("mo", extra={"daily": daily, "note": "n"}, sharpe=2.0), moments=moments)
    bare = make_record("bare")  # stored without them (a paper result, or one written before they existed)
    store.put([record, bare])
    for back in (store.get("mo"), store.top("sharpe", 1, Filters(strategy="momentum"))[0]):
        assert back == record
        assert back is not None and back.to_json() == record.to_json()
        assert decode_daily(back.extra["daily"])[1].tolist() == returns.tolist()
    lean = store.top("sharpe", 2, pictures=False)
    assert {r.job_id: r.moments for r in lean} == {"mo": moments, "bare": {}}  # moments are facts, not pictures
    assert store.get("bare") == bare


# --- ranking ------------------------------------------------------------------------------------------------------

RANKED = {  # job id: (sharpe, volatility)
    "j0": (None, None),
    "j1": (1.5, 0.3),
    "j2": (None, 0.1),
    "j3": (2.0, None),
    "j4": (1.5, 0.1),
    "j5": (-0.5, 0.2),
    "j6": (2.0, 0.3),
}


def _put_ranked(store: ResultStore, filtered: bool) -> Filters | None:
    records = [make_record(j, sharpe=s, volatility=v) for j, (s, v) in RANKED.items()]
    if filtered:
        # Better, worse and undefined values in another strategy, which the filter must keep out.
        noise = [(9.0, 0.0), (-9.0, 9.0), (None, None), (1.5, 0.1), (2.0, 0.3)]
        records += [make_record(f"i{k}", strategy="breakout", sharpe=s, volatility=v) for k, (s, v) in enumerate(noise)]
        records += [make_record(f"z{k}", strategy="breakout", sharpe=s, volatility=v) for k, (s, v) in enumerate(noise)]
    random.Random(7).shuffle(records)
    store.put(records)
    return Filters(strategy="momentum") if filtered else None


@pytest.mark.parametrize("filtered", [False, True], ids=["all", "filtered"])
def test_top_descending_metric_nulls_last_ties_by_job_id(store: ResultStore, filtered: bool) -> None:
    f = _put_ranked(store, filtered)
    assert ids(store.top("sharpe", 10, f)) == ["j3", "j6", "j1", "j4", "j5", "j0", "j2"]
    assert ids(store.top("sharpe", 1, f)) == ["j3"]
    assert ids(store.top("sharpe", 2, f)) == ["j3", "j6"]
    assert ids(store.top("sharpe", 3, f)) == ["j3", "j6", "j1"]  # n cuts the 1.5 tie: lower job id first
    assert ids(store.top("sharpe", 6, f)) == ["j3", "j6", "j1", "j4", "j5", "j0"]
    assert ids(store.top("sharpe", 10, f, ascending=True)) == ["j5", "j1", "j4", "j3", "j6", "j0", "j2"]
    assert ids(store.top("sharpe", 2, f, ascending=True)) == ["j5", "j1"]


@pytest.mark.parametrize("filtered", [False, True], ids=["all", "filtered"])
def test_top_ascending_metric_nulls_last_ties_by_job_id(store: ResultStore, filtered: bool) -> None:
    f = _put_ranked(store, filtered)
    assert ids(store.top("volatility", 10, f)) == ["j2", "j4", "j5", "j1", "j6", "j0", "j3"]
    assert ids(store.top("volatility", 1, f)) == ["j2"]
    assert ids(store.top("volatility", 10, f, ascending=False)) == ["j1", "j6", "j5", "j2", "j4", "j0", "j3"]
    assert ids(store.top("volatility", 1, f, ascending=False)) == ["j1"]
    assert ids(store.top("volatility", 4, f, ascending=False)) == ["j1", "j6", "j5", "j2"]


def test_top_by_integer_metric_and_all_null_metric(store: ResultStore) -> None:
    store.put([make_record("a", trades=3, win_rate=None), make_record("b", trades=12, win_rate=None),
               make_record("c", trades=3, win_rate=None), make_record("d", trades=0, win_rate=None)])  # fmt: skip
    assert ids(store.top("trades", 3)) == ["b", "a", "c"]
    assert ids(store.top("trades", 4, ascending=True)) == ["d", "a", "c", "b"]
    assert ids(store.top("win_rate", 3)) == ["a", "b", "c"]
    assert ids(store.top("fees_paid", 2)) == ["a", "b"]  # all tie: job id order


def test_top_without_pictures_is_the_same_ranking_with_extra_left_empty(store: ResultStore) -> None:
    curve = {"v": 1, "n": 3, "t0": 0, "dt": 60, "k": 1, "iw": 2, "data": "AQAAAIA/"}  # one point: step 1, equity 1.0
    store.put([make_record(j, sharpe=s, extra={"equity": curve, "note": j}) for j, s in (("a", 1.0), ("b", 3.0))])
    full = store.top("sharpe", 2)
    bare = store.top("sharpe", 2, pictures=False)
    assert [r.extra["note"] for r in full] == ["b", "a"] and full[0].extra["equity"] == curve
    assert bare == [dataclasses.replace(r, extra={}) for r in full]


def test_top_limits_and_validation(store: ResultStore) -> None:
    store.put([make_record("a"), make_record("b")])
    assert store.top("sharpe", 0) == []
    assert ids(store.top("sharpe", 1000)) == ["a", "b"]
    with pytest.raises(ValidationError, match="did you mean 'sharpe'"):
        store.top("sharp", 5)
    with pytest.raises(ValidationError):
        store.top("sharpe", -1)
    assert store.top("sharpe", 5, Filters(strategy="nope")) == []


# --- filters ------------------------------------------------------------------------------------------------------

OTHER_VALUES = {
    "strategy": "breakout",
    "symbol": "ETH-USD",
    "granularity": "5m",
    "start": "2026-02-01T00:00:00Z",
    "end": "2026-03-01T00:00:00Z",
    "source": "coinbase",
    "kind": "paper",
}


@pytest.mark.parametrize("field", sorted(OTHER_VALUES))
def test_every_field_filter(store: ResultStore, field: str) -> None:
    base = make_record("a", sharpe=3.0)
    other = make_record("b", sharpe=1.0, **{field: OTHER_VALUES[field]})  # type: ignore[arg-type]
    third = make_record("c", sharpe=2.0, **{field: OTHER_VALUES[field]})  # type: ignore[arg-type]
    store.put([base, other, third])
    wanted = Filters(**{field: OTHER_VALUES[field]})
    assert ids(list(store.iter_results(wanted))) == ["b", "c"]
    assert ids(store.top("sharpe", 5, wanted)) == ["c", "b"]
    assert [(r.key, r.results) for r in store.aggregate("strategy", wanted)] == [(third.strategy, 2)]
    kept = Filters(**{field: getattr(base, field)})
    assert ids(list(store.iter_results(kept))) == ["a"]
    assert ids(store.top("sharpe", 5, kept)) == ["a"]
    assert list(store.iter_results(Filters(**{field: "no-such-value"}))) == []


def test_filters_combine(store: ResultStore) -> None:
    store.put([
        make_record("a", symbol="ETH-USD", granularity="1h"),
        make_record("b", symbol="ETH-USD", granularity="5m"),
        make_record("c", symbol="BTC-USD", granularity="5m"),
    ])  # fmt: skip
    both = Filters(symbol="ETH-USD", granularity="5m")
    assert ids(list(store.iter_results(both))) == ["b"]
    assert ids(store.top("sharpe", 5, both)) == ["b"]
    assert ids(list(store.iter_results(Filters()))) == ["a", "b", "c"]


def test_filter_by_sweep_uses_its_manifest(store: ResultStore) -> None:
    store.put([make_record("a", sharpe=1.0), make_record("b", sharpe=2.0), make_record("c", sharpe=3.0, strategy="x")])
    store.create_sweep(sweep_record("s1", ("a", "c", "missing")))
    in_sweep = Filters(sweep="s1")
    assert ids(list(store.iter_results(in_sweep))) == ["a", "c"]
    assert ids(store.top("sharpe", 5, in_sweep)) == ["c", "a"]
    assert ids(store.top("sharpe", 5, Filters(sweep="s1", strategy="momentum"))) == ["a"]
    assert [(r.key, r.results) for r in store.aggregate("strategy", in_sweep)] == [("momentum", 1), ("x", 1)]
    assert list(store.iter_results(Filters(sweep="unknown"))) == []
    assert store.top("sharpe", 5, Filters(sweep="unknown")) == []


def test_iter_results_yields_each_result_once_across_pages(store: ResultStore) -> None:
    """Every result passing the filters, once, whole (the order is the store's: by job id, or chunk by chunk)."""
    job_ids = [f"{i:05d}" for i in range(1203)]
    records = [make_record(j, symbol="ETH-USD" if i % 3 == 0 else "BTC-USD") for i, j in enumerate(job_ids)]
    random.Random(1).shuffle(records)
    for start in range(0, 1203, 300):  # several commits
        assert store.put(records[start : start + 300]).inserted == len(records[start : start + 300])
    assert store.put(records[:10]).duplicates == 10  # a re-delivery adds nothing to iterate
    found = list(store.iter_results())
    assert sorted(ids(found)) == job_ids and len(found) == 1203
    assert sorted(found, key=lambda r: r.job_id) == sorted(records, key=lambda r: r.job_id)
    assert sorted(ids(list(store.iter_results(Filters(symbol="ETH-USD"))))) == job_ids[::3]
    assert store.existing(job_ids) == set(job_ids)


# --- aggregation --------------------------------------------------------------------------------------------------

AGGREGATED = [
    make_record("a1", strategy="momentum", symbol="BTC-USD", total_return=0.10, sharpe=1.0, max_drawdown=-0.20,
                trades=4, wins=3),
    make_record("a2", strategy="momentum", symbol="ETH-USD", total_return=-0.05, sharpe=None, max_drawdown=-0.30,
                trades=2, wins=0),
    make_record("a3", strategy="momentum", symbol="BTC-USD", total_return=0.25, sharpe=2.0, max_drawdown=-0.10,
                trades=6, wins=3),
    make_record("b1", strategy="breakout", symbol="BTC-USD", total_return=None, sharpe=None, max_drawdown=None,
                trades=0, wins=0),
    make_record("b2", strategy="breakout", symbol="ETH-USD", total_return=0.0, sharpe=-1.0, max_drawdown=-0.05,
                trades=0, wins=0),
]  # fmt: skip


def test_aggregate_by_strategy(store: ResultStore) -> None:
    store.put(AGGREGATED)
    assert store.aggregate("strategy") == [
        AggregateRow("breakout", 2, 0.0, -1.0, -0.05, 0, None),
        AggregateRow("momentum", 3, pytest.approx(0.30 / 3), 1.5, -0.30, 12, 0.5),  # type: ignore[arg-type]
    ]


def test_aggregate_by_symbol(store: ResultStore) -> None:
    store.put(AGGREGATED)
    assert store.aggregate("symbol") == [
        AggregateRow("BTC-USD", 3, pytest.approx(0.175), 1.5, -0.20, 10, 0.6),  # type: ignore[arg-type]
        AggregateRow("ETH-USD", 2, pytest.approx(-0.025), -1.0, -0.30, 2, 0.0),  # type: ignore[arg-type]
    ]


def test_aggregate_with_filters_and_validation(store: ResultStore) -> None:
    store.put(AGGREGATED)
    assert store.aggregate("strategy", Filters(symbol="ETH-USD")) == [
        AggregateRow("breakout", 1, 0.0, -1.0, -0.05, 0, None),
        AggregateRow("momentum", 1, -0.05, None, -0.30, 2, 0.0),
    ]
    assert store.aggregate("symbol", Filters(strategy="none")) == []
    with pytest.raises(ValidationError, match="did you mean 'symbol'"):
        store.aggregate("symbols")


# --- sweeps -------------------------------------------------------------------------------------------------------


def test_create_sweep_twice_changes_nothing(store: ResultStore) -> None:
    assert store.create_sweep(sweep_record("s1", ("j3", "j1", "j2", "j1"), grid="a")) is True
    assert store.create_sweep(sweep_record("s1", ("j9",), created_at=999.0, grid="b")) is False
    assert store.manifest("s1") == ["j1", "j2", "j3"]
    info = store.sweep("s1")
    assert info is not None
    assert (info.created_at, info.spec, info.source, info.total) == (100.0, {"grid": "a"}, "synthetic", 3)
    assert store.manifest("unknown") == []
    assert store.sweep("unknown") is None


def test_sweep_progress_done_dead_complete(store: ResultStore) -> None:
    store.put([make_record("j1")])  # done in an earlier sweep: counts as done here without a rerun
    store.create_sweep(sweep_record("s1", ("j1", "j2", "j3")))
    assert _progress(store, "s1") == (3, 1, 0, False)
    store.mark_dead("s1", "j2", "boom")
    assert store.dead("s1") == {"j2": "boom"}
    assert _progress(store, "s1") == (3, 1, 1, False)
    store.put([make_record("j3")])
    assert _progress(store, "s1") == (3, 2, 1, True)
    store.mark_dead("s1", "j2", "boom again")
    assert store.dead("s1") == {"j2": "boom again"}
    store.put([make_record("j2")])  # a straggler delivered after all: done, no longer counted dead
    assert _progress(store, "s1") == (3, 3, 0, True)
    assert store.dead("s1") == {"j2": "boom again"}
    assert store.dead("unknown") == {}


def test_results_count_for_every_sweep_listing_them(store: ResultStore) -> None:
    store.create_sweep(sweep_record("s1", ("j1", "j2")))
    store.create_sweep(sweep_record("s2", ("j2", "j3"), created_at=200.0))
    store.create_sweep(sweep_record("empty", ()))
    store.put([make_record("j2")])
    assert _progress(store, "s1") == (2, 1, 0, False)
    assert _progress(store, "s2") == (2, 1, 0, False)
    assert _progress(store, "empty") == (0, 0, 0, True)


def test_mark_dead_on_unknown_sweep_is_an_error(store: ResultStore) -> None:
    with pytest.raises(ValidationError, match="unknown sweep 'nope'"):
        store.mark_dead("nope", "j1", "boom")
    with pytest.raises(ValidationError, match="unknown sweep 'nope'"):
        store.mark_dead("nope", ["j1", "j2"], "boom")


def test_pending_is_expected_minus_done_minus_dead(store: ResultStore) -> None:
    store.put([make_record("j1")])
    store.create_sweep(sweep_record("s1", ("j4", "j1", "j2", "j3", "j5")))
    assert store.pending("s1") == ["j2", "j3", "j4", "j5"]
    store.mark_dead("s1", ["j3", "j5"], "cancelled")  # several at once, one reason
    assert store.dead("s1") == {"j3": "cancelled", "j5": "cancelled"}
    assert store.pending("s1") == ["j2", "j4"]
    store.put([make_record("j4")])
    assert store.pending("s1") == ["j2"]
    assert _progress(store, "s1") == (5, 2, 2, False)
    store.mark_dead("s1", [], "nothing")  # no ids: nothing changes
    assert store.pending("s1") == ["j2"] and store.pending("unknown") == []


def test_sweep_id_prefix(store: ResultStore) -> None:
    for sweep_id in ("ab12", "ab12ff", "ac00"):
        store.create_sweep(sweep_record(sweep_id, ("j1",)))
    found = store.sweep("ab12")  # exact id wins over being a prefix of another
    assert found is not None and found.sweep_id == "ab12"
    found = store.sweep("ab12f")
    assert found is not None and found.sweep_id == "ab12ff"
    found = store.sweep("ac")
    assert found is not None and found.sweep_id == "ac00"
    with pytest.raises(ValidationError, match="ambiguous"):
        store.sweep("a")
    assert store.sweep("zz") is None
    assert store.sweep("") is None


def test_sweeps_newest_first(store: ResultStore) -> None:
    assert store.sweeps() == []
    store.create_sweep(sweep_record("old", ("j1",), created_at=100.0))
    store.create_sweep(sweep_record("new-b", ("j1", "j2"), created_at=300.5))
    store.create_sweep(sweep_record("mid", (), created_at=200.0))
    store.create_sweep(sweep_record("new-a", ("j3",), created_at=300.5))
    store.put([make_record("j1")])
    infos = store.sweeps()
    assert [s.sweep_id for s in infos] == ["new-a", "new-b", "mid", "old"]
    assert [(s.total, s.done, s.complete) for s in infos] == [(1, 0, False), (2, 1, False), (0, 0, True), (1, 1, True)]
    assert infos[1] == store.sweep("new-b")


def _progress(store: ResultStore, sweep_id: str) -> tuple[int, int, int, bool]:
    info = store.sweep(sweep_id)
    assert info is not None
    return info.total, info.done, info.dead, info.complete


__all__ = [name for name in dir() if name.startswith("test_")]
