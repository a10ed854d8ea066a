"""``paper report``: a session's fills, metrics and equity curve, reconciled trade by trade against a backtest.

The reference backtest runs the engine over the session's bars with the same costs and capital, on candles with the
same first bar (the session's warm-up included), so the strategies see the series the session's buffer held:

- a **replay** reuses the very candles it replayed: every trade must be identical, and any difference is a bug;
- a **live** session is compared with the exchange's candles of its window (from the session's candle source).
  Differences are attributed per trade: the *fill price* against the bar open with the engine's spread (the live
  quote's mid versus the candle's open, and the spread actually crossed), the *latency* from the bar's open to the
  quote that filled it, *missed bars* (buckets without quotes, filled flat), and *signal* differences (the live
  bar's close, from quotes, versus the candle's close, from trades) when a trade exists on one side only or at
  other bars.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from backfarm._util.time import NS_PER_SECOND, from_ns, iso
from backfarm.candles.load import load_candles
from backfarm.config import Settings
from backfarm.core.candles import Candles, bars_per_year
from backfarm.core.formatting import count
from backfarm.engine.backtest import run_backtest
from backfarm.engine.downsample import downsample_minmax
from backfarm.errors import UserError
from backfarm.paper.accounts import END, Fill, RoundTrip, state_fields
from backfarm.paper.history import window_candles
from backfarm.paper.spec import SessionSpec
from backfarm.paper.store.base import SessionInfo, SessionStore
from backfarm.strategies.indicators import Indicators
from backfarm.strategies.registry import get_strategy

CURVE_POINTS = 200
"""Points of each account's equity curve in the report (min/max per bucket, so drawdowns stay visible)."""
_SAME = 1e-12
"""Relative difference below which two prices count as the same (only rounding)."""


def build_report(store: SessionStore, session_id: str, settings: Settings) -> dict[str, Any]:
    """The whole report as a JSON-ready dict (the CLI renders it as tables or prints it as JSON)."""
    info = store.get(session_id)
    if info is None:
        raise UserError(f"no paper session '{session_id}'")
    spec = info.spec
    fills = store.fills(session_id)
    trades = store.trades(session_id)
    curves = _curves(spec, store.equity(session_id))
    checkpoint = store.checkpoint(session_id)
    live_bars = checkpoint.bars if checkpoint else []
    accounts = []
    for account in spec.accounts():
        key = account.key
        state = state_fields(info.accounts.get(key), spec.capital)
        final = (info.final or {}).get(key)
        accounts.append(
            {
                "account": key,
                "strategy": account.strategy,
                "params": account.params,
                "symbol": account.symbol,
                "metrics": final,
                "equity": equity_now(info, account.symbol, state),
                "trades": int(state["trades"]),
                "position": state["qty"],
                "fills": [f.to_dict() for f in fills if f.account == key],
                "round_trips": [t.to_dict() for t in trades if t.account == key],
                "curve": curves.get(key, []),
            }
        )
    report: dict[str, Any] = {"session": _header(info), "accounts": accounts}
    if info.cursor is not None:
        report["reconciliation"] = _reconcile_all(info, settings, fills, trades, live_bars)
    return report


def _header(info: SessionInfo) -> dict[str, Any]:
    spec, cursor = info.spec, info.cursor or {}
    start, end = cursor.get("start_ns"), cursor.get("end_ns")
    return {
        "session_id": spec.session_id,
        "status": info.status,
        "feed": spec.feed,
        "speed": ("max" if spec.speed is None else spec.speed) if spec.replay else None,
        "source": spec.source,
        "granularity": spec.granularity,
        "strategies": {name: params for name, params in spec.strategies},
        "symbols": list(spec.symbols),
        "window": [iso(from_ns(start)) if start else None, iso(from_ns(end)) if end else None],
        "bars": cursor.get("bars_done", {}),
        "warmup": spec.warmup_bars(),
        "costs": spec.costs.to_dict(),
        "capital": spec.capital,
        "resumes": info.resumes,
        "worker": info.worker,
        "error": info.error,
        "notes": cursor.get("notes", []),
        "warnings": cursor.get("warnings", {}),
    }


def equity_now(info: SessionInfo, symbol: str, state: dict[str, float]) -> float:
    """Cash plus the position at the latest price known for ``symbol`` (quote mid live, last close in replay)."""
    cursor = info.cursor or {}
    price = math.nan
    quote = cursor.get("quotes", {}).get(symbol)
    if quote and not info.spec.replay:
        price = (quote["bid"] + quote["ask"]) / 2.0
    if not math.isfinite(price):
        last = cursor.get("last", {}).get(symbol)
        price = float(last[1]) if last else state["last_price"]
    held = state["qty"] * price if state["qty"] and math.isfinite(price) else 0.0
    return state["cash"] + held


def account_rows(info: SessionInfo, now: float) -> list[dict[str, Any]]:
    """Per account: equity at the latest price, P&L, return, trades, position, whether an order is pending, and the
    age of its symbol's last quote at ``now`` (what ``paper status`` and the dashboard show)."""
    cursor, capital, rows = info.cursor or {}, info.spec.capital, []
    for account in info.spec.accounts():
        fields = state_fields(info.accounts.get(account.key), capital)
        equity = equity_now(info, account.symbol, fields)
        quote = cursor.get("quotes", {}).get(account.symbol)
        rows.append(
            {
                "account": account.key,
                "strategy": account.strategy,
                "params": account.params,
                "symbol": account.symbol,
                "equity": equity,
                "pnl": equity - capital,
                "return": equity / capital - 1.0,
                "trades": int(fields["trades"]),
                "position": fields["qty"],
                "pending": bool(fields["pending"]),
                "quote_age_s": now - quote["received"] if quote and "received" in quote else None,
            }
        )
    return rows


def equity_marks(spec: SessionSpec, rows: list[list[Any]]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per account key: (bar, bar open time in ns, equity at that bar's close) from a session's equity rows
    (``SessionStore.equity``: symbol index, bar, open time, then one equity per strategy)."""
    per_symbol: dict[int, list[list[Any]]] = defaultdict(list)
    for row in rows:
        per_symbol[int(row[0])].append(row)
    names = [name for name, _ in spec.strategies]
    marks = {}
    for index, symbol in enumerate(spec.symbols):
        symbol_rows = per_symbol.get(index)
        if not symbol_rows:
            continue
        bars = np.array([r[1] for r in symbol_rows], dtype=np.int64)
        ts = np.array([r[2] for r in symbol_rows], dtype=np.int64)
        for k, name in enumerate(names):
            marks[f"{name}@{symbol}"] = (bars, ts, np.array([r[3 + k] for r in symbol_rows], dtype=np.float64))
    return marks


def _curves(spec: SessionSpec, rows: list[list[Any]]) -> dict[str, list[list[float]]]:
    """Each account's equity marks, downsampled to ``CURVE_POINTS`` as ``[ts_ns, equity]`` pairs."""
    curves = {}
    for key, (_, ts, values) in equity_marks(spec, rows).items():
        keep = downsample_minmax(values, CURVE_POINTS)
        curves[key] = [[int(ts[i]), float(values[i])] for i in keep]
    return curves


# --- reconciliation ----------------------------------------------------------------------------------------------


def _reconcile_all(
    info: SessionInfo, settings: Settings, fills: list[Fill], trades: list[RoundTrip], live_bars: list[dict[str, Any]]
) -> dict[str, Any]:
    spec, cursor = info.spec, info.cursor or {}
    out: dict[str, Any] = {"reference": "", "accounts": {}}
    start_ns = int(cursor["start_ns"])
    warm = spec.warmup_bars()
    for symbol in spec.symbols:
        keys = [f"{name}@{symbol}" for name, _ in spec.strategies]
        bars = int(cursor.get("bars_done", {}).get(symbol, 0))
        try:
            if bars < 2:
                raise UserError(f"the session ran {count(bars, 'bar')} of {symbol}: a backtest needs at least 2")
            candles, offset = _reference_candles(spec, settings, symbol, start_ns, warm, bars)
            if len(candles) - offset < 2:
                raise UserError(f"the reference candles hold {count(len(candles) - offset, 'bar')} of the session")
        except UserError as exc:  # no reconciliation for this symbol: the report says why, and shows the rest
            out["accounts"].update(dict.fromkeys(keys, {"error": str(exc)}))
            continue
        missed = _missed_bars(live_bars, symbol, start_ns, spec.bar_ns)
        closes = _live_closes(live_bars, symbol, start_ns, spec.bar_ns)
        indicators = Indicators(candles)
        for key, (name, params) in zip(keys, spec.strategies, strict=True):
            bt = _backtest(spec, candles, indicators, offset, name, params)
            paper = [t for t in trades if t.account == key]
            account_fills = [f for f in fills if f.account == key]
            out["accounts"][key] = reconcile(spec, paper, account_fills, bt, candles, offset, closes, missed)
    out["reference"] = (
        "the replayed candles (identical trades expected)"
        if spec.replay
        else f"{spec.source} candles of the session window (differences attributed per trade)"
    )
    return out


def _reference_candles(
    spec: SessionSpec, settings: Settings, symbol: str, start_ns: int, warm: int, bars: int
) -> tuple[Candles, int]:
    """Candles from the session's first buffer bar to its last bar, and the index of the first session bar."""
    lo_ns, hi_ns = start_ns - warm * spec.bar_ns, start_ns + bars * spec.bar_ns
    if spec.replay:  # exactly what the replay loaded
        candles = load_candles(settings, spec.source, symbol, spec.granularity, from_ns(lo_ns), from_ns(hi_ns))
    else:
        candles = window_candles(settings, spec.source, symbol, spec.granularity, lo_ns, hi_ns)
    offset = int(np.searchsorted(candles.ts, start_ns))
    return candles, offset


def _backtest(
    spec: SessionSpec, candles: Candles, indicators: Indicators, offset: int, name: str, params: dict[str, Any]
) -> dict[str, Any]:
    """The engine over the session's bars of ``candles`` (``indicators`` are the symbol's, shared by its strategies)."""
    exposure = get_strategy(name).exposure(indicators, dict(params))[offset:]
    window = candles.slice(offset, len(candles))
    result = run_backtest(
        window.open, window.high, window.low, window.close, exposure, spec.costs, spec.capital,
        bars_per_year(spec.bar_seconds), record=True,
    )  # fmt: skip
    assert result.trades is not None
    return {"metrics": result.metrics, "final_equity": result.final_equity, "trades": result.trades.to_records()}


def _live_closes(live_bars: list[dict[str, Any]], symbol: str, start_ns: int, step: int) -> dict[int, float]:
    return {(int(b["ts"]) - start_ns) // step: float(b["close"]) for b in live_bars if b["symbol"] == symbol}


def _missed_bars(live_bars: list[dict[str, Any]], symbol: str, start_ns: int, step: int) -> set[int]:
    return {(int(b["ts"]) - start_ns) // step for b in live_bars if b["symbol"] == symbol and b.get("missed")}


def reconcile(
    spec: SessionSpec,
    paper: list[RoundTrip],
    fills: list[Fill],
    bt: dict[str, Any],
    candles: Candles,
    offset: int,
    live_close: dict[int, float],
    missed: set[int],
) -> dict[str, Any]:
    """Paper round trips against the backtest's, matched by entry bar, each difference attributed.

    ``live_close`` maps session bars to the closes the live buffer held, ``missed`` lists bars without quotes.
    """
    by_entry = {t["entry_bar"]: t for t in bt["trades"]}
    fills_at = {(f.bar, "end" if f.reason == END else f.side): f for f in fills}

    def row(trip: RoundTrip | None, ref: dict[str, Any] | None) -> dict[str, Any]:
        """One paper trade and/or its backtest twin (at least one of them is given)."""
        entry = trip.entry_bar if trip is not None else int(ref["entry_bar"])  # type: ignore[index]
        return {
            "entry_bar": entry,
            "entry_time": iso(from_ns(int(candles.ts[offset + entry]))) if offset + entry < len(candles) else None,
            "paper": trip.to_dict() if trip is not None else None,
            "backtest": ref,
            "attribution": _attribute(spec, trip, ref, fills_at, candles, offset, live_close, missed),
        }

    rows = []
    matched: set[int] = set()
    for trip in paper:
        ref = by_entry.get(trip.entry_bar)
        if ref is not None:
            matched.add(trip.entry_bar)
        rows.append(row(trip, ref))
    for entry, ref in sorted(by_entry.items()):
        if entry not in matched:
            rows.append(row(None, ref))
    rows.sort(key=lambda r: r["entry_bar"])
    paper_pnl = sum(t.pnl for t in paper)
    bt_pnl = sum(t["pnl"] for t in bt["trades"])
    return {
        "trades": {"paper": len(paper), "backtest": len(bt["trades"])},
        "identical": all(r["attribution"] == ["identical"] for r in rows),
        "pnl": {"paper": paper_pnl, "backtest": bt_pnl, "difference": paper_pnl - bt_pnl},
        "backtest_metrics": bt["metrics"],
        "backtest_final_equity": bt["final_equity"],
        "rows": rows,
    }


def _attribute(
    spec: SessionSpec,
    trip: RoundTrip | None,
    ref: dict[str, Any] | None,
    fills_at: dict[tuple[int, str], Fill],
    candles: Candles,
    offset: int,
    live_close: dict[int, float],
    missed: set[int],
) -> list[str]:
    """Why a paper trade differs from its backtest twin (``["identical"]`` when it does not)."""
    if trip is not None and ref is not None and _same_trade(trip, ref):
        return ["identical"]
    reasons = []
    if trip is None or ref is None:
        bar = (trip.entry_bar if trip is not None else int(ref["entry_bar"])) - 1  # type: ignore[index]
        side = "paper only" if ref is None else "backtest only"
        reasons.append(f"signal: {side} — {_signal_cause(bar, candles, offset, live_close, missed)}")
        return reasons
    if trip.exit_bar != ref["exit_bar"]:
        cause = _signal_cause(min(trip.exit_bar, int(ref["exit_bar"])) - 1, candles, offset, live_close, missed)
        reasons.append(f"signal: exit at bar {trip.exit_bar} vs {ref['exit_bar']} — {cause}")
    exit_side = "end" if trip.exit_reason == END else "sell"
    for side, bar, paper_price, bt_price in (
        ("buy", trip.entry_bar, trip.entry_price, ref["entry_price"]),
        (exit_side, trip.exit_bar, trip.exit_price, ref["exit_price"]),
    ):
        if abs(paper_price / bt_price - 1.0) > _SAME:
            fill = fills_at.get((bar, side))
            reasons.append(_price_cause(spec, side, bar, paper_price, bt_price, fill, candles, offset))
    if bar_missed := sorted(b for b in (trip.entry_bar, trip.exit_bar) if b in missed):
        reasons.append(f"missed bars: no quotes at bar(s) {', '.join(map(str, bar_missed))} (flat bars)")
    return reasons or ["rounding: sizes or fees differ below 1e-12"]


def _same_trade(trip: RoundTrip, ref: dict[str, Any]) -> bool:
    return (
        trip.entry_bar == ref["entry_bar"]
        and trip.exit_bar == ref["exit_bar"]
        and trip.exit_reason == ref["exit_reason"]
        and all(
            abs(getattr(trip, k) - ref[k]) <= _SAME * max(1.0, abs(ref[k]))
            for k in ("entry_price", "exit_price", "qty", "pnl")
        )
    )


def _price_cause(
    spec: SessionSpec,
    side: str,
    bar: int,
    paper_price: float,
    bt_price: float,
    fill: Fill | None,
    candles: Candles,
    offset: int,
) -> str:
    diff = (paper_price / bt_price - 1.0) * 1e4
    text = f"fill price: {'close-out' if side == 'end' else side} {diff:+.1f} bps vs the backtest"
    if fill is None or offset + bar >= len(candles):
        return text
    spread = (fill.ask - fill.bid) / fill.ref * 1e4 if math.isfinite(fill.ask) and fill.ref > 0 else math.nan
    if side == "end":  # the backtest closes out at the last candle's close
        close = float(candles.close[offset + bar])
        mid = ((fill.bid + fill.ask) / 2.0 / close - 1.0) * 1e4 if math.isfinite(fill.ask) else math.nan
        return f"{text} (last quote mid {mid:+.1f} bps from the candle close, spread {spread:.1f} bps)"
    bar_open = float(candles.open[offset + bar])
    mid_vs_open = (fill.ref / bar_open - 1.0) * 1e4 if bar_open > 0 else math.nan
    latency = (fill.time_ns - fill.bar_ts) / NS_PER_SECOND
    return (
        f"{text} (quote mid {mid_vs_open:+.1f} bps from the bar open, spread {spread:.1f} bps vs "
        f"{spec.costs.spread_bps:g} modelled; latency {latency:.1f} s after the bar opened)"
    )


def _signal_cause(bar: int, candles: Candles, offset: int, live_close: dict[int, float], missed: set[int]) -> str:
    """What made the decision at ``bar`` differ: a missed bar, or the live close against the candle's close."""
    if bar in missed:
        return f"bar {bar} had no quotes (flat bar)"
    live = live_close.get(bar)
    if live is not None and 0 <= offset + bar < len(candles):
        candle = float(candles.close[offset + bar])
        return (
            f"decision bar {bar}: live close {live:g} vs candle close {candle:g} ({(live / candle - 1) * 1e4:+.1f} bps)"
        )
    return f"decision bar {bar}: the strategy saw different bars"
