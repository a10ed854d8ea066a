"""The WebSocket quote feed against the simulator: quotes, reconnects, sequence gaps, stale feeds, REST fallback.

Every loop stops on a condition (enough quotes, a reconnect seen); ``duration`` is only a safety net.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterator

import pytest

from backfarm.coinbase.auth import CdpKey
from backfarm.coinbase.feed import QuoteFeed
from backfarm.coinbase.quotes import Quote
from backfarm.config import Settings
from backfarm.errors import AuthError
from backfarm.simulator import Simulator
from tests.coinbase.helpers import free_port, make_client

PRODUCTS = ["BTC-USD", "ETH-USD"]
SAFETY_S = 8.0


def _feed(sim: Simulator, **kwargs: object) -> QuoteFeed:
    kwargs.setdefault("backoff_base", 0.05)
    kwargs.setdefault("backoff_cap", 0.2)
    kwargs.setdefault("rng", random.Random(3))
    return QuoteFeed(sim.ws_url, PRODUCTS, **kwargs)  # type: ignore[arg-type]


def _take(quotes: Iterator[Quote], until: Callable[[list[Quote]], bool]) -> list[Quote]:
    seen: list[Quote] = []
    for quote in quotes:
        seen.append(quote)
        if until(seen):
            break
    return seen


def _assert_no_repeats(quotes: list[Quote]) -> None:
    """No quote repeats the previous one of its product, and exchange times never go backwards."""
    last: dict[str, Quote] = {}
    for q in quotes:
        prev = last.get(q.product)
        assert not q.same_prices(prev), f"duplicated quote {q}"
        if prev is not None and q.exchange_time and prev.exchange_time:
            assert q.exchange_time >= prev.exchange_time
        last[q.product] = q


def test_quotes_arrive_typed(sim: Simulator) -> None:
    feed = _feed(sim)
    quotes = _take(feed.quotes(SAFETY_S), lambda seen: len(seen) >= 12 and {q.product for q in seen} == set(PRODUCTS))
    assert {q.product for q in quotes} == set(PRODUCTS)
    for q in quotes:
        assert q.source == "ws" and 0 < q.bid < q.ask and q.bid_size > 0 and q.ask_size > 0
        assert q.bid <= q.last <= q.ask and q.exchange_time is not None
        assert q.exchange_time.tzinfo is not None and q.receive_time.tzinfo is not None
        assert 0 < q.spread_bps < 5
    _assert_no_repeats(quotes)
    subscribed = [e.detail for e in feed.events if e.kind == "subscribed"]
    # One channel per subscribe message: the server confirms ticker first, then ticker + heartbeats.
    assert subscribed[:2] == [
        '{"ticker": ["BTC-USD", "ETH-USD"]}',
        '{"heartbeats": [], "ticker": ["BTC-USD", "ETH-USD"]}',
    ]
    assert feed.stats.connects == 1 and feed.stats.gaps == 0


def test_heartbeats_keep_counting(sim: Simulator) -> None:
    feed = _feed(sim)
    for _ in feed.quotes(SAFETY_S):
        if feed.stats.heartbeats >= 3:
            break
    assert feed.stats.heartbeats >= 3


def test_jwt_sent_when_key_configured(sim: Simulator, ec_key: CdpKey) -> None:
    sim.register_key(ec_key)
    feed = _feed(sim, key=ec_key)
    assert len(_take(feed.quotes(SAFETY_S), lambda seen: len(seen) >= 3)) == 3


def test_unknown_key_is_an_auth_error(sim: Simulator, ed_key: CdpKey) -> None:
    feed = _feed(sim, key=ed_key)  # not registered with the simulator
    with pytest.raises(AuthError, match="WebSocket authentication failed"):
        _take(feed.quotes(SAFETY_S), lambda seen: True)


def test_dropped_connection_reconnects_without_duplicates(sim: Simulator) -> None:
    sim.faults.ws_drop_after = 6
    sim.faults.ws_connections = 2  # the first two connections are cut after 6 messages each
    feed = _feed(sim)
    quotes = _take(feed.quotes(SAFETY_S), lambda seen: feed.stats.connects >= 3 and len(seen) >= 30)
    assert feed.stats.connects == 3 and feed.stats.disconnects == 2 and sim.ws_connections == 3
    assert [e.kind for e in feed.events].count("disconnected") == 2
    _assert_no_repeats(quotes)


def test_sequence_gap_is_reported_and_ticker_resubscribed(sim: Simulator) -> None:
    sim.faults.ws_skip_after = 4
    sim.faults.ws_connections = 1
    feed = _feed(sim)
    quotes = _take(feed.quotes(SAFETY_S), lambda seen: feed.stats.gaps >= 1 and len(seen) >= 20)
    gap = next(e for e in feed.events if e.kind == "gap")
    assert gap.detail == "sequence gap: expected 4, got 5 (1 missed)"
    kinds = [e.kind for e in feed.events]
    assert kinds.index("resubscribed") == kinds.index("gap") + 1
    assert feed.stats.gaps == 1 and feed.stats.connects == 1  # handled on the same connection
    _assert_no_repeats(quotes)


def test_stale_feed_reconnects(sim: Simulator) -> None:
    sim.faults.ws_silent_after = 5
    sim.faults.ws_connections = 1
    feed = _feed(sim, stale_after=0.5)  # messages normally arrive every 0.05 s
    quotes = _take(feed.quotes(SAFETY_S), lambda seen: feed.stats.connects >= 2 and len(seen) >= 10)
    assert feed.stats.stale >= 1 and feed.stats.connects >= 2
    assert any(e.kind == "stale" and "no message for 0.5 s" in e.detail for e in feed.events)
    _assert_no_repeats(quotes)


def test_rest_fallback_while_the_socket_is_down(sim: Simulator) -> None:
    feed = QuoteFeed(
        f"ws://127.0.0.1:{free_port()}/ws",
        PRODUCTS,
        rest=make_client(sim),
        backoff_base=0.2,
        backoff_cap=0.4,
        fallback_after=1,
        poll_interval=0.05,
        rng=random.Random(0),
    )
    quotes = _take(feed.quotes(SAFETY_S), lambda seen: len(seen) >= 4)
    assert all(q.source == "rest" and q.bid < q.ask for q in quotes)
    assert feed.mode == "rest" and feed.stats.polls >= 2
    assert any(e.kind == "fallback" for e in feed.events)
    assert any(e.kind == "disconnected" and "refused" in e.detail for e in feed.events)
    assert all(r.path.endswith("/market/product_book") for r in sim.requests)
    _assert_no_repeats(quotes)


def test_duration_ends_the_iteration(sim: Simulator) -> None:
    feed = _feed(sim)
    quotes = list(feed.quotes(duration=2.0))
    assert quotes and feed.stats.connects == 1


def test_callback_thread_and_stop(sim: Simulator) -> None:
    got: list[Quote] = []
    enough = threading.Event()

    def on_quote(q: Quote) -> None:
        got.append(q)
        if len(got) >= 5:
            enough.set()

    feed = _feed(sim)
    thread = feed.start(on_quote)
    assert enough.wait(SAFETY_S)
    feed.stop()
    assert not thread.is_alive()


def test_from_settings(sim: Simulator) -> None:
    settings = Settings(coinbase_api_url=sim.api_url, coinbase_ws_url=sim.ws_url)
    feed = QuoteFeed.from_settings(settings, ["SOL-USD"], stale_after=5.0)
    assert feed.key is None and feed.rest is not None and feed.rest.api_url == sim.api_url
    quote = next(iter(feed.quotes(SAFETY_S)))
    assert quote.product == "SOL-USD" and not math.isnan(quote.bid)
