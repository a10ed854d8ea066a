"""Ranking and aggregation rules shared by every result store, so SQLite and Redis give identical answers.

A ranking puts the best value first in the metric's direction (:func:`~backfarm.core.results.metric_order`
unless overridden), undefined values (``None``) last whatever the direction, and breaks ties by job id ascending.
Aggregates use exactly-rounded sums (:func:`math.fsum`) so the result does not depend on the order rows arrive in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import orjson

from backfarm.core.results import METRICS, AggregateRow, ResultRecord, metric_order
from backfarm.errors import ValidationError, did_you_mean
from backfarm.results import rows

GROUP_KEYS: tuple[str, ...] = ("strategy", "symbol")
"""Fields :func:`aggregate_records` can group by."""

AggregateInput = tuple[str, Any, Any, Any, Any, Any]
"""``(key, total_return, sharpe, max_drawdown, trades, wins)``: the only columns an aggregate needs."""

SortKey = tuple[int, float, str]


def check_metric(metric: str) -> str:
    """Return ``metric`` if it is a known metric, else raise a "did you mean" :class:`ValidationError`."""
    if metric not in METRICS:
        raise ValidationError(did_you_mean("metric", metric, METRICS))
    return metric


def check_group(by: str) -> str:
    """Return ``by`` if results can be grouped by it, else raise a "did you mean" :class:`ValidationError`."""
    if by not in GROUP_KEYS:
        raise ValidationError(did_you_mean("aggregate key", by, GROUP_KEYS))
    return by


def check_limit(n: int) -> int:
    """Return ``n`` if it is a valid result count (``>= 0``)."""
    if n < 0:
        raise ValidationError(f"the number of results must be >= 0, got {n}")
    return n


def is_ascending(metric: str, ascending: bool | None = None) -> bool:
    """True when the best value of ``metric`` is the lowest (``ascending`` overrides the metric's own order)."""
    return metric_order(metric) == "asc" if ascending is None else ascending


def is_null(value: Any) -> bool:
    """Undefined metric values: ``None`` and non-finite floats."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def value_key(value: Any, job_id: str, ascending: bool) -> SortKey:
    """Sort key of one (value, job id) pair: best first in the given direction, nulls last, ties by job id."""
    if is_null(value):
        return (1, 0.0, job_id)
    return (0, value if ascending else -value, job_id)


def sort_key(metric: str, ascending: bool | None = None) -> Callable[[ResultRecord], SortKey]:
    """A ``key=`` function ordering records best first by ``metric``."""
    check_metric(metric)
    asc = is_ascending(metric, ascending)

    def key(record: ResultRecord) -> SortKey:
        return value_key(record.metrics.get(metric), record.job_id, asc)

    return key


def rank(
    records: Iterable[ResultRecord], metric: str, n: int | None = None, ascending: bool | None = None
) -> list[ResultRecord]:
    """The best ``n`` (all when ``None``) of ``records`` by ``metric``."""
    ordered = sorted(records, key=sort_key(metric, ascending))
    return ordered if n is None else ordered[: check_limit(n)]


def best_positions(
    values: np.ndarray, n: int, ascending: bool, ids_of: Callable[[np.ndarray], Sequence[str]]
) -> np.ndarray:
    """Positions in ``values`` (float64, NaN = undefined) of the best ``n``, in rank order: :func:`rank` on columns.

    Ranks a million values in a few milliseconds without reading a job id it does not need: ``ids_of(positions)``
    gives the job ids at ``positions`` and is asked only about the rows that make the cut and the rows tying with the
    last of them (plus undefined rows when fewer than ``n`` values are defined).
    """
    if n == 0:
        return np.empty(0, dtype=np.int64)
    valid = ~np.isnan(values)
    defined = np.flatnonzero(valid)
    key = values[defined] if ascending else -values[defined]
    if len(defined) > n:
        cut = np.partition(key, n - 1)[n - 1]
        chosen = np.flatnonzero(key <= cut)  # the sure ones and every row tying with the n-th
    else:
        chosen = np.arange(len(defined))
    picked = defined[chosen]
    order = np.lexsort((_ids(ids_of, picked), key[chosen]))[:n]  # by value, then job id
    best = picked[order]
    if len(best) < n:
        undefined = np.flatnonzero(~valid)
        by_id = np.argsort(_ids(ids_of, undefined), kind="stable")[: n - len(best)]
        best = np.concatenate([best, undefined[by_id]])
    return best


def _ids(ids_of: Callable[[np.ndarray], Sequence[str]], positions: np.ndarray) -> np.ndarray:
    """Job ids at ``positions`` as a numpy array (``lexsort`` and ``argsort`` compare them as strings)."""
    return np.array(ids_of(positions) if len(positions) else [], dtype=str)


def bare(record: ResultRecord) -> ResultRecord:
    """``record`` without ``extra`` (its pictures and notes): what ``top(..., pictures=False)`` returns."""
    return dataclasses.replace(record, extra={})


def record_json(record: ResultRecord) -> str:
    """The stored form of ``record``: key-sorted compact JSON that decodes to exactly ``record.to_dict()``.

    Encoded with orjson when the record holds plain values (3x faster than the standard encoder on a record with
    its artifacts, which matters at thousands of results per second); the text may differ from
    :meth:`ResultRecord.to_json` in how an exponent is spelled (``1e-6`` for ``1e-06``), never in a value. Ids and
    hashes never use this (they use :func:`canonical_json`).
    """
    try:
        return orjson.dumps(vars(record), option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # an object inside ``extra`` that asdict knows how to convert (a dataclass), or a big int
        return record.to_json()


def match_prefix(prefix: str, ids: Iterable[str]) -> str | None:
    """The id in ``ids`` equal to ``prefix``, else the only one starting with it; ``None`` when none does.

    Raises :class:`ValidationError` when the prefix matches several ids (the empty prefix matches nothing).
    """
    if not prefix:
        return None
    matches = sorted(i for i in ids if i.startswith(prefix))
    if prefix in matches:
        return prefix
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise ValidationError(f"sweep id prefix '{prefix}' is ambiguous (matches {shown}); give more characters")
    return matches[0] if matches else None


AGGREGATE_COLUMNS: tuple[str, ...] = tuple(
    rows.metric_column(m) for m in ("total_return", "sharpe", "max_drawdown", "trades", "wins")
)
"""The metric columns an aggregate reads, in the order :func:`aggregate_columns` takes them."""


def aggregate_columns(keys: np.ndarray, values: Sequence[np.ndarray]) -> list[AggregateRow]:
    """:func:`aggregate_records` of columns: ``keys`` (the ``by`` field of each result) and the columns of
    :data:`AGGREGATE_COLUMNS`, numpy arrays that are masked where a value is undefined (as DuckDB hands them over)."""
    keys = np.ma.getdata(keys)
    defined = [~np.ma.getmaskarray(column) for column in values]
    data = [np.ma.getdata(column) for column in values]
    out = []
    for key in sorted(set(keys.tolist())):
        group = keys == key
        total_return, sharpe, drawdown, trades, wins = (
            d[group & ok].tolist() for d, ok in zip(data, defined, strict=True)
        )
        trade_count, win_count = int(sum(trades)), int(sum(wins))
        out.append(
            AggregateRow(
                key=key,
                results=int(group.sum()),
                mean_return=math.fsum(total_return) / len(total_return) if total_return else None,
                mean_sharpe=math.fsum(sharpe) / len(sharpe) if sharpe else None,
                worst_drawdown=float(min(drawdown)) if drawdown else None,
                trades=trade_count,
                win_rate=win_count / trade_count if trade_count else None,
            )
        )
    return out


def aggregate_input(record: ResultRecord, by: str) -> AggregateInput:
    """The columns of ``record`` an aggregate reads, keyed by its ``by`` field."""
    m = record.metrics
    return (
        getattr(record, by),
        m.get("total_return"),
        m.get("sharpe"),
        m.get("max_drawdown"),
        m.get("trades"),
        m.get("wins"),
    )


def aggregate_records(records: Iterable[ResultRecord], by: str) -> list[AggregateRow]:
    """Per-``by`` summaries of ``records`` (see :class:`~backfarm.core.results.AggregateRow`), sorted by key."""
    check_group(by)
    return aggregate_rows(aggregate_input(r, by) for r in records)


def aggregate_rows(rows: Iterable[AggregateInput]) -> list[AggregateRow]:
    """Summaries of ``(key, total_return, sharpe, max_drawdown, trades, wins)`` rows, sorted by key.

    Stores that can read those columns without decoding whole records (SQLite) call this directly.
    """
    groups: dict[str, list[AggregateInput]] = {}
    for row in rows:
        groups.setdefault(row[0], []).append(row)
    return [_summarise(key, groups[key]) for key in sorted(groups)]


def _summarise(key: str, rows: Sequence[AggregateInput]) -> AggregateRow:
    trades = sum(_count(r[4]) for r in rows)
    wins = sum(_count(r[5]) for r in rows)
    drawdowns = [r[3] for r in rows if not is_null(r[3])]
    return AggregateRow(
        key=key,
        results=len(rows),
        mean_return=_mean(r[1] for r in rows),
        mean_sharpe=_mean(r[2] for r in rows),
        worst_drawdown=float(min(drawdowns)) if drawdowns else None,
        trades=trades,
        win_rate=wins / trades if trades else None,
    )


def _mean(values: Iterable[Any]) -> float | None:
    """Mean over defined values (``None`` when there are none); fsum makes it independent of order."""
    defined = [float(v) for v in values if not is_null(v)]
    return math.fsum(defined) / len(defined) if defined else None


def _count(value: Any) -> int:
    """A trade count: undefined counts as zero; SQLite hands back REAL columns as floats."""
    return 0 if is_null(value) else int(value)
