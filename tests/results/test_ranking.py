"""The pure ranking and aggregation rules every store shares."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfarm.core.results import AggregateRow, ResultRecord
from backfarm.errors import ValidationError
from backfarm.results import ranking
from tests.results.contract import AGGREGATED, make_record


def _ids(records: list) -> list[str]:
    return [r.job_id for r in records]


def test_direction_comes_from_the_metric_unless_overridden() -> None:
    assert ranking.is_ascending("volatility") and ranking.is_ascending("fees_paid") and ranking.is_ascending("turnover")
    assert not ranking.is_ascending("sharpe") and not ranking.is_ascending("max_drawdown")
    assert ranking.is_ascending("sharpe", ascending=True)
    assert not ranking.is_ascending("volatility", ascending=False)


def test_rank_puts_nulls_last_and_breaks_ties_by_job_id() -> None:
    records = [
        make_record("c", sharpe=1.0),
        make_record("a", sharpe=None),
        make_record("e", sharpe=2),
        make_record("b", sharpe=1.0),
        make_record("d", sharpe=math.nan),  # non-finite counts as undefined
        make_record("f", sharpe=-3.5),
    ]
    assert _ids(ranking.rank(records, "sharpe")) == ["e", "b", "c", "f", "a", "d"]
    assert _ids(ranking.rank(records, "sharpe", ascending=True)) == ["f", "b", "c", "e", "a", "d"]
    assert _ids(ranking.rank(records, "sharpe", n=3)) == ["e", "b", "c"]
    assert ranking.rank(records, "sharpe", n=0) == []
    assert _ids(sorted(records, key=ranking.sort_key("sharpe"))) == ["e", "b", "c", "f", "a", "d"]


def test_max_drawdown_ranks_the_shallowest_first() -> None:
    records = [
        make_record("a", max_drawdown=-0.5),
        make_record("b", max_drawdown=0.0),
        make_record("c", max_drawdown=-0.1),
    ]
    assert _ids(ranking.rank(records, "max_drawdown")) == ["b", "c", "a"]


def test_value_key_orders_ints_and_floats_together() -> None:
    keys = sorted(
        [ranking.value_key(3, "x", False), ranking.value_key(2.5, "y", False), ranking.value_key(None, "a", False)]
    )
    assert keys == [(0, -3, "x"), (0, -2.5, "y"), (1, 0.0, "a")]


def test_unknown_metric_group_and_bad_limit_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match="unknown metric 'sharp' \\(did you mean 'sharpe'\\?\\)"):
        ranking.check_metric("sharp")
    with pytest.raises(ValidationError, match="did you mean 'strategy'"):
        ranking.check_group("strategies")
    with pytest.raises(ValidationError, match=">= 0"):
        ranking.check_limit(-2)
    with pytest.raises(ValidationError):
        ranking.sort_key("nope")


def test_aggregate_records_hand_computed() -> None:
    by_strategy = ranking.aggregate_records(AGGREGATED, "strategy")
    assert by_strategy == [
        AggregateRow("breakout", 2, 0.0, -1.0, -0.05, 0, None),
        AggregateRow("momentum", 3, pytest.approx(0.1), 1.5, -0.30, 12, 0.5),  # type: ignore[arg-type]
    ]
    by_symbol = ranking.aggregate_records(reversed(AGGREGATED), "symbol")
    assert by_symbol == [
        AggregateRow("BTC-USD", 3, 0.175, 1.5, -0.20, 10, 0.6),
        AggregateRow("ETH-USD", 2, -0.025, -1.0, -0.30, 2, 0.0),
    ]
    assert ranking.aggregate_records([], "symbol") == []


def test_aggregate_is_independent_of_order_and_reads_sqlite_floats() -> None:
    rows = [("k", 0.1, 1.0, -0.2, 4.0, 3.0), ("k", 0.2, None, None, None, None), ("k", 0.3, 2.0, -0.4, 6.0, 1.0)]
    forward = ranking.aggregate_rows(rows)
    assert forward == ranking.aggregate_rows(reversed(rows))
    assert forward == [AggregateRow("k", 3, math.fsum([0.1, 0.2, 0.3]) / 3, 1.5, -0.4, 10, 0.4)]
    assert isinstance(forward[0].trades, int)


def test_match_prefix() -> None:
    ids = ["ab12", "ab12ff", "ac00"]
    assert ranking.match_prefix("ab12", ids) == "ab12"
    assert ranking.match_prefix("ab12f", ids) == "ab12ff"
    assert ranking.match_prefix("ac", ids) == "ac00"
    assert ranking.match_prefix("zz", ids) is None
    assert ranking.match_prefix("", ids) is None
    with pytest.raises(ValidationError, match="'a' is ambiguous \\(matches ab12, ab12ff, ac00\\)"):
        ranking.match_prefix("a", ids)


@dataclasses.dataclass
class _Point:
    x: float


def test_record_json_decodes_to_the_record_with_sorted_keys() -> None:
    plain = make_record(
        "a", params={"n": 3, "w": 0.5}, extra={"curve": [1.0, 2.5, 3.06869792167e-06, 1e22], "tag": "ü"}, sharpe=None
    )
    text = ranking.record_json(plain)
    assert json.loads(text) == plain.to_dict()
    assert ResultRecord.from_json(text) == plain
    keys = list(json.loads(text))
    assert keys == sorted(keys)
    with_dataclass = make_record("b", extra={"point": _Point(1.5)})
    assert ranking.record_json(with_dataclass) == with_dataclass.to_json()


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.sampled_from([-1.5, 0.0, 2.0, 3.25]), st.floats(-1e6, 1e6)), max_size=40),
    n=st.integers(0, 45),
    ascending=st.booleans(),
)
def test_best_positions_ranks_columns_exactly_as_rank_ranks_records(
    values: list[float | None], n: int, ascending: bool
) -> None:
    """Column ranking (what the columnar stores use) = the record ranking, with ties (few distinct values), nulls and
    cuts anywhere; and it asks for the job ids of rows that make the cut or tie with it, no others."""
    ids = [f"job{(i * 7919) % 101:03d}" for i in range(len(values))]  # distinct, not in position order
    records = [make_record(j, sharpe=v) for j, v in zip(ids, values, strict=True)]
    column = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    asked: list[int] = []

    def ids_of(positions: np.ndarray) -> list[str]:
        asked.extend(positions.tolist())
        return [ids[p] for p in positions]

    best = ranking.best_positions(column, n, ascending, ids_of)
    expected = [r.job_id for r in ranking.rank(records, "sharpe", n, ascending)]
    assert [ids[p] for p in best] == expected
    defined = sorted(v for v in values if v is not None)
    if n and len(defined) > n:
        cut = (defined if ascending else defined[::-1])[n - 1]
        assert all(values[p] is not None and (values[p] <= cut if ascending else values[p] >= cut) for p in asked)
