"""The parts of a paper session, with hand-computed numbers: accounts, size rules, the broker's prices and safety
rules, the bar aggregator, and a live session on a scripted feed (crossed and stale quotes are not traded)."""

from __future__ import annotations

import logging
import math
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backfarm._util.time import NS_PER_SECOND as NS
from backfarm.candles.load import load_candles
from backfarm.coinbase.quotes import Quote
from backfarm.config import Settings
from backfarm.core.costs import Costs
from backfarm.errors import ValidationError
from backfarm.paper.accounts import Account, Prices, SizeRules
from backfarm.paper.bars import Bar, BarAggregator
from backfarm.paper.broker import Broker, Tick
from backfarm.paper.session import run_session
from backfarm.paper.spec import build_spec
from backfarm.paper.store.sqlite import SQLiteSessionStore
from backfarm.results.embedded import EmbeddedStore

MIN = 60 * NS


# --- accounts ----------------------------------------------------------------------------------------------------


def test_account_buys_at_the_ask_sells_at_the_bid_and_pays_the_fee_on_both_sides() -> None:
    account = Account("momentum@BTC-USD", 1000.0, fee=0.01, markdown=0.001)
    assert account.decide(1.0) and account.pending
    side, qty, price, trip = account.rebalance(Prices(ref=100.0, buy=100.1, sell=99.9), bar=0)
    # All the cash buys at the ask, fee included: qty × 100.1 × 1.01 = 1000.
    assert (side, price, trip) == ("buy", 100.1, None)
    assert qty == 1000.0 / (100.1 * 1.01)
    assert account.cash == 0.0 and account.qty == qty
    assert account.fees == pytest.approx(qty * 100.1 * 0.01)
    account.close_bar(110.0, bar=0, last=False)
    assert account.e_prev == qty * 110.0
    assert account.decide(0.0)
    side, sold, price, trip = account.rebalance(Prices(ref=110.0, buy=110.11, sell=109.89), bar=1)
    assert (side, sold, price) == ("sell", qty, 109.89)
    proceeds = qty * 109.89 - qty * 109.89 * 0.01
    assert account.cash == pytest.approx(proceeds) and account.qty == 0.0
    assert trip is not None and trip.pnl == pytest.approx(proceeds - 1000.0)
    assert (trip.entry_bar, trip.exit_bar, trip.exit_reason) == (0, 1, "signal")
    assert trip.ret == pytest.approx(proceeds / 1000.0 - 1.0)
    assert account.trades == 1.0 and account.wins == 1.0


def test_account_state_round_trips_exactly_through_a_checkpoint() -> None:
    account = Account("a", 1000.0, fee=0.006, markdown=0.0001, stop_frac=0.01)
    account.decide(0.5)
    account.rebalance(Prices(ref=3.0, buy=3.0003, sell=2.9997), bar=3)
    account.close_bar(3.1, 3, False)
    copy = Account("a", 1000.0, fee=0.006, markdown=0.0001, stop_frac=0.01)
    copy.restore(account.state())
    assert copy.state() == account.state()
    assert copy.stop == account.avg_entry * (1.0 - 0.01) and math.isinf(copy.target)


def test_size_rules_round_down_to_the_increment_and_refuse_small_orders() -> None:
    rules = SizeRules(base_increment=0.001, base_min_size=0.01, quote_min_size=1.0)
    assert rules.floor(0.123456789) == 0.123
    assert rules.floor(5.0) == 5.0
    assert SizeRules(1e-8).floor(0.123456789123) == 0.12345678
    assert rules.refusal(0.005, 1000.0) == "size 0.005 below the minimum 0.01"
    assert rules.refusal(0.02, 10.0) == "notional 0.20 below the minimum 1"
    assert rules.refusal(0.0, 10.0) == "rounds to zero at the base increment"
    assert rules.refusal(0.02, 100.0) is None
    account = Account("a", 5.0, fee=0.0, markdown=0.0, rules=SizeRules(0.001, base_min_size=0.1))
    account.decide(1.0)
    assert account.rebalance(Prices(100.0, 100.0, 100.0), bar=0) is None  # 0.05 units: below the minimum
    assert not account.pending and account.refused == "size 0.05 below the minimum 0.1" and account.cash == 5.0
    account = Account("b", 1000.0, fee=0.0, markdown=0.0, rules=SizeRules(0.001))
    account.decide(1.0)
    _, qty, _, _ = account.rebalance(Prices(3.0, 3.0, 3.0), bar=0)
    assert qty == 333.333 and account.cash == pytest.approx(1000.0 - 333.333 * 3.0)


# --- broker ------------------------------------------------------------------------------------------------------


def _tick(bid: float, ask: float, at_s: float = 0.0, received: float = 1000.0) -> Tick:
    return Tick("BTC-USD", bid, ask, (bid + ask) / 2.0, int(at_s * NS), received, "ws")


def test_broker_prices_live_quotes_at_bid_and_ask_plus_slippage() -> None:
    broker = Broker(Costs(slippage_bps=10.0), synthetic=False, stale_after_s=30.0)
    prices = broker.prices(_tick(99.0, 101.0))
    assert prices == Prices(100.0, 101.0 * 1.001, 99.0 * 0.999)


def test_broker_replay_quotes_are_the_open_with_the_engines_spread() -> None:
    broker = Broker(Costs(spread_bps=4.0, slippage_bps=1.0), synthetic=True, stale_after_s=30.0)
    tick = broker.replay_tick("BTC-USD", 200.0, 7 * MIN)
    assert (tick.bid, tick.ask, tick.ref, tick.time_ns) == (200.0 * (1 - 0.0002), 200.0 * (1 + 0.0002), 200.0, 7 * MIN)
    # The engine's expressions: open × (1 ± (half spread + slippage)).
    assert broker.prices(tick) == Prices(200.0, 200.0 * (1.0 + 0.0003), 200.0 * (1.0 - 0.0003))
    assert broker.refusal(_tick(101.0, 100.0), 0) is None  # replayed quotes are never refused
    assert broker.exit_price(190.0) == 190.0 * (1.0 - 0.0003)


def test_broker_refuses_crossed_invalid_and_stale_quotes() -> None:
    broker = Broker(Costs(), synthetic=False, stale_after_s=30.0)
    assert broker.refusal(_tick(100.0, 100.5, at_s=100.0), head_ns=110 * NS, now=1005.0) is None
    assert broker.refusal(_tick(100.5, 100.0), 0, now=1000.0) == "crossed book (bid 100.5 >= ask 100)"
    assert broker.refusal(_tick(100.0, 100.0), 0, now=1000.0) == "crossed book (bid 100 >= ask 100)"
    assert broker.refusal(_tick(math.nan, 100.0), 0, now=1000.0) == "no usable book (bid nan, ask 100.0)"
    assert broker.refusal(_tick(100.0, 100.5, at_s=10.0), head_ns=50 * NS, now=1000.0) == (
        "stale quote (40 s behind the feed)"
    )
    assert broker.refusal(_tick(100.0, 100.5), 0, now=1045.0) == "stale quote (received 45 s ago)"


# --- bars --------------------------------------------------------------------------------------------------------


def test_aggregator_builds_bars_fills_empty_buckets_and_never_reopens_a_bar() -> None:
    agg = BarAggregator(MIN, start_ns=0, prev_close=99.0)
    assert agg.add(100.0, 0) == [] and agg.add(103.0, 10 * NS) == [] and agg.add(98.0, 50 * NS) == []
    assert agg.add(101.0, 70 * NS) == [Bar(0, 100.0, 103.0, 98.0, 98.0, 0.0, 3)]
    # Nothing at all from 120 s to 180 s: that bucket becomes a flat bar at the previous close.
    assert agg.add(104.0, 200 * NS) == [
        Bar(MIN, 101.0, 101.0, 101.0, 101.0, 0.0, 1),
        Bar(2 * MIN, 101.0, 101.0, 101.0, 101.0, 0.0, 0, True),
    ]
    # A quote from a bucket already closed (a snapshot replayed after a reconnect) changes nothing.
    assert agg.add(500.0, 100 * NS) == [] and agg.late == 1
    assert agg.close_until(4 * MIN) == [Bar(3 * MIN, 104.0, 104.0, 104.0, 104.0, 0.0, 1)]
    assert agg.close_until(4 * MIN) == []


# --- spec --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategies": ["momentun"]}, "unknown strategy 'momentun' (did you mean 'momentum'?)"),
        ({"duration": "0s"}, "--duration must be positive, got '0s'"),
        ({"duration": "-5m"}, "--duration needs a unit, like 120s, 30m, 4h, 7d or 2w (got '-5m')"),
        ({"duration": "300"}, "--duration needs a unit, like 120s, 30m, 4h, 7d or 2w (got '300')"),
        ({"speed": "0"}, "--speed must be positive (or 'max'), got '0'"),
        ({"speed": "fast"}, "--speed must be a positive number or 'max', got 'fast'"),
        ({"feed": "kraken"}, "unknown feed 'kraken'"),
        ({"params": {"momentum": {"lookback": 0}}}, "parameter momentum:lookback=0 is outside [1, 5000]"),
        ({"start": "2024-01-01T00:00:30"}, "--from must fall on a 1m bar boundary"),
        ({"warmup": "-1"}, "--warmup must be >= 0, got -1"),
    ],
)
def test_bad_session_specs_are_one_line_validation_errors(kwargs: dict, message: str) -> None:
    args = {"strategies": ["momentum"], "symbols": ["BTC-USD"], "duration": "1h", "feed": "replay", "start": None}
    args.update(kwargs)
    strategies, symbols, duration = args.pop("strategies"), args.pop("symbols"), args.pop("duration")
    with pytest.raises(ValidationError) as err:
        build_spec(strategies, symbols, duration, **args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_spec_round_trips_and_defaults_the_replay_window_to_the_days_before_today() -> None:
    now = datetime(2024, 5, 10, 15, 30, tzinfo=UTC)
    spec = build_spec(["momentum"], ["BTC-USD"], "2d", feed="replay", now=now, costs=Costs(stop_loss_bps=50.0))
    assert spec.start == "2024-05-08T00:00:00Z" and spec.window_bars == 2880 and spec.warmup == 0
    assert type(spec).from_dict(spec.to_dict()) == spec
    live = build_spec(["momentum"], ["BTC-USD"], 90, now=now)
    assert live.window_bars == 2 and live.warmup is None and live.warmup_bars() == 61


# --- a live session on a scripted feed ---------------------------------------------------------------------------


class ScriptedQuotes:
    """A quote source that delivers a fixed list of quotes as soon as it is started."""

    def __init__(self, quotes: list[Quote]) -> None:
        self.quotes = quotes
        self.stopped = threading.Event()

    def start(self, callback):  # type: ignore[no-untyped-def]
        for quote in self.quotes:
            callback(quote)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()


def test_live_session_does_not_trade_on_crossed_or_stale_quotes(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    # Quotes near the level of the synthetic candles the session warms up on.
    level = float(load_candles(settings, "synthetic", "BTC-USD", "1m", t0 - timedelta(minutes=5), t0).close[-1])

    def quote(at_s: float, bid: float, ask: float) -> Quote:
        return Quote(
            "BTC-USD", bid * level, ask * level, 1.0, 1.0, bid * level, t0 + timedelta(seconds=at_s), datetime.now(UTC)
        )

    script = [
        quote(5, 1.0, 1.0002),  # bar 0
        quote(65, 1.01, 1.009),  # closes bar 0 (target: long); crossed → no fill
        quote(20, 0.99, 0.9902),  # 45 s behind the feed: late for the bars, and stale → no fill
        quote(75, 1.01, 1.0102),  # fills the buy at the ask
        quote(170, 1.02, 1.0202),  # the last bar's last quote: the close-out sells at its bid
        quote(185, 1.03, 1.0302),  # past the window (3 bars): ends the session
    ]
    spec = build_spec(
        ["momentum"], ["BTC-USD"], 180, params={"momentum": {"lookback": 1, "threshold": -0.5}},
        source="synthetic", warmup=5,
    )  # fmt: skip
    store = SQLiteSessionStore(tmp_path / "paper.sqlite")
    store.create(spec)
    caplog.set_level(logging.WARNING, logger="backfarm.paper")
    outcome = run_session(
        store, spec.session_id, settings, results=EmbeddedStore(tmp_path / "r"),
        quotes=lambda *_: ScriptedQuotes(script), rules=lambda *_: {},
    )  # fmt: skip
    fills = store.fills(spec.session_id)
    assert [(f.side, f.price, f.reason, f.time_ns) for f in fills] == [
        ("buy", 1.0102 * level, "rebalance", int((t0 + timedelta(seconds=75)).timestamp() * NS)),
        ("sell", 1.02 * level, "end", int((t0 + timedelta(seconds=170)).timestamp() * NS)),
    ]
    qty = 10_000.0 / (1.0102 * level * 1.006)
    assert fills[0].qty == qty and fills[1].qty == qty
    assert outcome.final_equity["momentum@BTC-USD"] == pytest.approx(qty * 1.02 * level * (1 - 0.006))
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "crossed book" in messages and ": not trading" in messages
    assert "stale quote (45 s behind the feed): not trading" in messages
    checkpoint = store.checkpoint(spec.session_id)
    assert [b["ts"] for b in checkpoint.bars] == [int(t0.timestamp() * NS) + i * MIN for i in range(3)]
    assert checkpoint.cursor["feed"]["late_quotes"] == 1
