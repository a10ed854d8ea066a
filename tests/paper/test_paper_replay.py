"""Replay parity: the paper code replaying a window gives exactly the engine's trades, equity and metrics.

For every built-in strategy, on synthetic candles, with and without stop-loss / take-profit, with no warm-up (the
window alone, as ``backfarm backtest`` sees it) and with the strategies' warm-up. Also: chunked evaluation equals
per-bar evaluation, and a run that dies mid-way and resumes from its checkpoint ends exactly like one that did not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backfarm.config import Settings
from backfarm.core.costs import Costs
from backfarm.paper.session import run_session
from backfarm.paper.store.sqlite import SQLiteSessionStore
from backfarm.results.embedded import EmbeddedStore
from backfarm.strategies.registry import strategy_names
from tests.paper.conftest import DyingStore, reference_backtests, replay_spec

BUILTINS = ["breakout", "ma_crossover", "mean_reversion", "momentum", "volatility"]
WINDOW = ("1d", "2024-02-05T00:00:00Z")


def _replay(spec, settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    store = SQLiteSessionStore(tmp_path / f"{spec.session_id}.sqlite")
    store.create(spec)
    outcome = run_session(store, spec.session_id, settings, results=EmbeddedStore(tmp_path / "results"))
    return store, outcome


def test_builtins_are_all_covered() -> None:
    assert set(BUILTINS) <= set(strategy_names())


@pytest.mark.parametrize(
    ("warmup", "costs"),
    [
        ("0", Costs()),
        ("auto", Costs()),
        ("0", Costs(fee_bps=25.0, spread_bps=5.0, slippage_bps=3.0, stop_loss_bps=80.0, take_profit_bps=120.0)),
    ],
    ids=["window-only", "warmed-up", "stops-and-slippage"],
)
def test_replay_equals_backtest_trade_for_trade(warmup: str, costs: Costs, settings: Settings, tmp_path: Path) -> None:
    spec = replay_spec(BUILTINS, ["BTC-USD", "SOL-USD"], *WINDOW, warmup=warmup, costs=costs)
    store, outcome = _replay(spec, settings, tmp_path)
    expected = reference_backtests(spec, settings)
    trades = store.trades(spec.session_id)
    total = 0
    for key, result in expected.items():
        paper = [t.to_dict() for t in trades if t.account == key]
        engine = result.trades.to_records()
        assert [{k: t[k] for k in engine[0]} for t in paper] == engine if engine else paper == [], key
        assert outcome.final_equity[key] == result.final_equity, key
        assert outcome.metrics[key] == result.metrics, key
        total += len(engine)
    assert total > 100  # the window makes every strategy trade
    if costs.stop_loss_bps:
        assert {t.exit_reason for t in trades} >= {"signal", "stop", "target", "end"}
    # Equity marks: one row per bar and symbol, the engine's equity curve account by account.
    rows = store.equity(spec.session_id)
    assert len(rows) == 2 * spec.window_bars
    for index, symbol in enumerate(spec.symbols):
        marks = np.array([r[3:] for r in rows if r[0] == index])
        for k, name in enumerate(BUILTINS):
            assert np.array_equal(marks[:, k], expected[f"{name}@{symbol}"].equity)


def test_chunked_evaluation_equals_bar_by_bar(settings: Settings, tmp_path: Path) -> None:
    """``--speed max`` evaluates strategies over chunks of bars; pacing evaluates at every bar close."""
    fast = replay_spec(BUILTINS, ["ETH-USD"], "6h", "2024-02-06T00:00:00Z", warmup="auto")
    paced = replay_spec(BUILTINS, ["ETH-USD"], "6h", "2024-02-06T00:00:00Z", warmup="auto", speed=1e9)
    store_a, a = _replay(fast, settings, tmp_path)
    store_b, b = _replay(paced, settings, tmp_path)
    assert a.final_equity == b.final_equity and a.metrics == b.metrics
    fills_a = [(f.fill_id, f.qty, f.price) for f in store_a.fills(fast.session_id)]
    fills_b = [(f.fill_id, f.qty, f.price) for f in store_b.fills(paced.session_id)]
    assert fills_a == fills_b and len(fills_a) > 10


class _Crash(BaseException):
    """Stands in for a worker killed between two commits (not an Exception: nothing may handle it)."""


def test_resume_from_checkpoint_records_each_fill_once(settings: Settings, tmp_path: Path) -> None:
    spec = replay_spec(["momentum", "breakout"], ["BTC-USD"], "8h", "2024-02-07T00:00:00Z", warmup="auto")
    _, expected = _replay(spec, settings, tmp_path)
    reference = SQLiteSessionStore(tmp_path / f"{spec.session_id}.sqlite")
    spec2 = replay_spec(["momentum", "breakout"], ["BTC-USD"], "8h", "2024-02-07T00:00:00Z", warmup="auto", lease_s=0.2)
    dying = DyingStore(tmp_path / "dying.sqlite", die_at=200, error=_Crash)
    dying.create(spec2)
    results = EmbeddedStore(tmp_path / "results")
    with pytest.raises(_Crash):
        run_session(dying, spec2.session_id, settings, results=results)
    assert dying.get(spec2.session_id).status == "running"  # as a SIGKILLed worker leaves it
    dying.die_at = 0
    resumed = run_session(dying, spec2.session_id, settings, results=results)
    assert resumed.resumed and resumed.status == "finished"
    assert resumed.final_equity == expected.final_equity and resumed.metrics == expected.metrics
    got = [(f.fill_id, f.qty, f.price) for f in dying.fills(spec2.session_id)]
    want = [(f.fill_id, f.qty, f.price) for f in reference.fills(spec.session_id)]
    assert got == want and len(set(got)) == len(got) > 20
    assert len(dying.equity(spec2.session_id)) == spec2.window_bars
