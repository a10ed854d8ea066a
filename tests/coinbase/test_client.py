"""The REST client against the simulator over real HTTP: paging, ordering, gaps, retries, typed errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import requests

from backfarm.candles.sources.coinbase import CoinbaseSource
from backfarm.coinbase.auth import CdpKey
from backfarm.coinbase.client import CoinbaseClient, RetryPolicy, candle_pages
from backfarm.coinbase.ratelimit import NoRateLimit
from backfarm.config import Settings
from backfarm.errors import AuthError, DataError, RateLimited, ServiceUnavailable, ValidationError
from backfarm.simulator import SimConfig, Simulator
from tests.coinbase.helpers import SleepRecorder, free_port, make_client

T0 = datetime(2025, 3, 31, 20, 0, tzinfo=UTC)
"""A window start four hours before a month boundary (paging must not care)."""
NS = 1_000_000_000


def _expected_ts(start: datetime, n: int, step_s: int) -> np.ndarray:
    return (int(start.timestamp()) + np.arange(n, dtype=np.int64) * step_s) * NS


# --------------------------------------------------------------------------------------------------- products


def test_products_time_and_book(sim: Simulator) -> None:
    client = make_client(sim)
    products = client.products()
    assert {"BTC-USD", "ETH-USD", "SOL-USD", "LINK-USD", "POL-USD"} <= set(products)
    assert "MATIC-USD" not in products
    btc = client.get_product("BTC-USD")
    assert (btc.base_currency, btc.quote_currency, btc.quote_increment, btc.status) == ("BTC", "USD", 0.01, "online")
    assert abs(client.server_time().timestamp() - datetime.now(UTC).timestamp()) < 5
    book = client.product_book("ETH-USD", limit=3)
    assert len(book.bids) == len(book.asks) == 3
    assert [p for p, _ in book.bids] == sorted((p for p, _ in book.bids), reverse=True)
    assert [p for p, _ in book.asks] == sorted(p for p, _ in book.asks)
    assert book.bids[0][0] < book.asks[0][0]
    assert all(r.path.startswith("/api/v3/brokerage/market/") or r.path.endswith("/time") for r in sim.requests)


# ---------------------------------------------------------------------------------------------------- candles


def test_1000_one_minute_candles_take_4_requests_ascending_unique(sim: Simulator) -> None:
    client = make_client(sim)
    end = T0 + timedelta(minutes=1000)
    candles = client.get_candles("BTC-USD", "1m", T0, end)
    assert np.array_equal(candles["ts"], _expected_ts(T0, 1000, 60))
    requests_made = sim.candle_requests()
    assert len(requests_made) == 4
    spans = sorted((int(r.query["start"][0]), int(r.query["end"][0])) for r in requests_made)
    a = int(T0.timestamp())
    # end is sent as the last bucket's open + 59 s: the same buckets whether end is inclusive or exclusive.
    assert spans == [(a, a + 17999), (a + 18000, a + 35999), (a + 36000, a + 53999), (a + 54000, a + 59999)]
    assert all(r.query["granularity"] == ["ONE_MINUTE"] for r in requests_made)
    for col in ("open", "high", "low", "close", "volume"):
        assert candles[col].dtype == np.float64 and np.isfinite(candles[col]).all()
    assert (candles["high"] >= np.maximum(candles["open"], candles["close"])).all()
    assert (candles["low"] <= np.minimum(candles["open"], candles["close"])).all()


def test_server_sends_newest_first_and_client_reorders(sim: Simulator) -> None:
    a = int(T0.timestamp())
    raw = requests.get(
        f"{sim.api_url}/api/v3/brokerage/market/products/ETH-USD/candles",
        params={"start": a, "end": a + 3600 * 5, "granularity": "ONE_HOUR"},
        timeout=5,
    ).json()["candles"]
    assert [int(c["start"]) for c in raw] == [a + 3600 * i for i in (5, 4, 3, 2, 1, 0)]
    assert all(isinstance(v, str) for c in raw for v in c.values())
    page = make_client(sim).candles_page("ETH-USD", "1h", a, a + 3600 * 5)
    assert list(page["ts"] // NS) == [a + 3600 * i for i in range(5)]  # [start, end): the bucket at end excluded
    newest_first = raw[1:]
    assert page["close"][0] == float(newest_first[-1]["close"])


@pytest.mark.parametrize("end_inclusive", [True, False])
def test_paging_is_exact_for_inclusive_and_exclusive_end(end_inclusive: bool) -> None:
    config = SimConfig(public_rate=None, end_inclusive=end_inclusive)
    with Simulator(config) as sim:
        candles = make_client(sim).get_candles("SOL-USD", "5m", T0, T0 + timedelta(minutes=5 * 650))
    assert np.array_equal(candles["ts"], _expected_ts(T0, 650, 300))


def test_all_granularities_page_by_at_most_300(sim: Simulator) -> None:
    client = make_client(sim)
    for granularity, seconds in (
        ("1m", 60),
        ("5m", 300),
        ("15m", 900),
        ("30m", 1800),
        ("1h", 3600),
        ("2h", 7200),
        ("6h", 21600),
        ("1d", 86400),
    ):
        sim.clear_log()
        start = datetime(2024, 1, 1, tzinfo=UTC)
        candles = client.get_candles("BTC-USD", granularity, start, start + timedelta(seconds=seconds * 301))
        assert np.array_equal(candles["ts"], _expected_ts(start, 301, seconds)), granularity
        assert len(sim.candle_requests()) == 2, granularity


def test_pages_agree_with_one_request_and_windows_overlap_exactly(sim: Simulator) -> None:
    client = make_client(sim)
    whole = client.get_candles("BTC-USD", "1m", T0, T0 + timedelta(minutes=900))
    part = client.get_candles("BTC-USD", "1m", T0 + timedelta(minutes=250), T0 + timedelta(minutes=420))
    for col in whole:
        assert np.array_equal(part[col], whole[col][250:420])


def test_unaligned_window_starts_at_the_next_bucket(sim: Simulator) -> None:
    start = T0 + timedelta(seconds=30)
    candles = make_client(sim).get_candles("BTC-USD", "1m", start, T0 + timedelta(minutes=5))
    assert np.array_equal(candles["ts"], _expected_ts(T0 + timedelta(minutes=1), 4, 60))
    assert candle_pages("1m", T0, T0) == []


def test_missing_buckets_are_simply_absent(sim: Simulator) -> None:
    a = int(T0.timestamp())
    missing = {a + 60 * i for i in (0, 7, 299, 300, 611)}
    sim.faults.omit_buckets = missing
    source = CoinbaseSource(make_client(sim))
    candles = source.fetch("BTC-USD", "1m", T0, T0 + timedelta(minutes=700))
    expected = [t for t in range(a, a + 700 * 60, 60) if t not in missing]
    assert list(candles["ts"] // NS) == expected


def test_source_contract_and_progress_callback(sim: Simulator) -> None:
    source = CoinbaseSource(make_client(sim))
    assert (source.name, source.can_fetch) == ("coinbase", True)
    pages: list[int] = []
    naive_start = T0.replace(tzinfo=None)  # taken as UTC
    candles = source.fetch("ETH-USD", "15m", naive_start, T0 + timedelta(minutes=15 * 700), on_page=pages.append)
    assert pages == [300, 300, 100]
    assert source.requests_needed("15m", T0, T0 + timedelta(minutes=15 * 700)) == 3
    assert len(candles["ts"]) == 700 and candles["ts"].dtype == np.int64
    with pytest.raises(ValidationError, match="unknown granularity '4h'"):
        source.fetch("ETH-USD", "4h", T0, T0 + timedelta(days=1))


def test_validate_symbol_uses_cached_product_list(sim: Simulator) -> None:
    source = CoinbaseSource(make_client(sim))
    source.validate_symbol("BTC-USD")
    source.validate_symbol("ETH-USD")
    with pytest.raises(ValidationError, match=r"^unknown product 'BTC-USDX' \(did you mean 'BTC-USD'\?\)$"):
        source.validate_symbol("BTC-USDX")
    with pytest.raises(ValidationError, match="MATIC became POL.*use 'POL-USD'"):
        source.validate_symbol("MATIC-USD")
    assert len([r for r in sim.requests if r.path.endswith("/products")]) == 1


def test_candles_of_unknown_product_suggest_the_right_one(sim: Simulator) -> None:
    with pytest.raises(ValidationError, match=r"^unknown product 'BTC-USDX' \(did you mean 'BTC-USD'\?\)$"):
        make_client(sim).get_candles("BTC-USDX", "1h", T0, T0 + timedelta(hours=3))


# -------------------------------------------------------------------------------------------- retries and errors


def test_429_then_success_honours_retry_after(sim: Simulator) -> None:
    sleep = SleepRecorder()
    client = make_client(sim, sleep=sleep)
    sim.faults.only_paths = "/candles"
    sim.faults.fail_next(429, 429, retry_after=1.5)
    candles = client.get_candles("BTC-USD", "1h", T0, T0 + timedelta(hours=10))
    assert len(candles["ts"]) == 10
    assert [r.status for r in sim.candle_requests()] == [429, 429, 200]
    assert len(sleep.calls) == 2 and all(1.5 <= s <= 1.5 + 0.2 / 4 for s in sleep.calls)


def test_429_without_retry_after_backs_off_exponentially_with_jitter_and_cap(sim: Simulator) -> None:
    sleep = SleepRecorder()
    client = make_client(sim, sleep=sleep, retry=RetryPolicy(max_retries=5, base_delay=0.2, max_delay=1.0))
    sim.faults.only_paths = "/candles"
    sim.faults.body_429 = "html"  # a gateway page instead of JSON must not matter
    sim.faults.fail_next(*[429] * 5)
    client.get_candles("BTC-USD", "1h", T0, T0 + timedelta(hours=2))
    ceilings = [0.2, 0.4, 0.8, 1.0, 1.0]
    assert len(sleep.calls) == 5
    for delay, ceiling in zip(sleep.calls, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_a_429_storm_is_waited_out_then_raises_rate_limited(sim: Simulator) -> None:
    """429s are not counted as retries: the client keeps trying (the limiter slowing down) for the policy's
    patience, then gives up; a storm that ends within it ends in success."""
    sim.faults.fail_next(*[429] * 1000)
    sleep = SleepRecorder()
    policy = RetryPolicy(max_retries=3, base_delay=0.2, max_delay=1.0, rate_limit_patience=10.0)
    with pytest.raises(RateLimited, match="still 429 after 10 s of slowing down"):
        make_client(sim, sleep=sleep, retry=policy).server_time()
    assert len(sim.requests) > 4  # far more than max_retries: it kept trying
    assert sum(sleep.calls) >= 10.0  # the client believes it waited the whole patience
    sim.faults.statuses.clear()  # the storm passes
    sim.faults.fail_next(*[429] * 12)
    sim.clear_log()
    make_client(sim, retry=RetryPolicy(max_retries=3, base_delay=0.2, max_delay=1.0)).server_time()
    assert [r.status for r in sim.requests] == [429] * 12 + [200]


def test_5xx_then_success(sim: Simulator) -> None:
    sim.faults.fail_next(503, 500)
    assert make_client(sim).get_product("SOL-USD").product_id == "SOL-USD"
    assert [r.status for r in sim.requests] == [503, 500, 200]


def test_5xx_retries_are_capped_then_service_unavailable(sim: Simulator) -> None:
    sim.faults.fail_next(*[502] * 10)
    with pytest.raises(ServiceUnavailable, match="502 Bad Gateway.*after 4 attempts"):
        make_client(sim).get_product("SOL-USD")
    assert len(sim.requests) == 4


def test_read_timeout_is_retried(sim: Simulator) -> None:
    sim.faults.delays = [3.0]  # the first answer comes after the 1 s read timeout; the retry's at once
    client = make_client(sim, timeout=(2.0, 1.0))
    assert client.get_product("BTC-USD").product_id == "BTC-USD"
    assert len(sim.requests) == 2


def test_timeouts_every_time_give_service_unavailable(sim: Simulator) -> None:
    sim.faults.delays = [0.6, 0.6, 0.6]
    client = make_client(sim, timeout=(2.0, 0.2), retry=RetryPolicy(max_retries=2, base_delay=0.01))
    with pytest.raises(ServiceUnavailable, match="did not answer .* within 0.2 s"):
        client.get_product("BTC-USD")


def test_connection_refused_says_unreachable_and_suggests_synthetic() -> None:
    sleep = SleepRecorder()
    client = CoinbaseClient(f"http://127.0.0.1:{free_port()}", limiter=NoRateLimit(), sleep=sleep)
    with pytest.raises(ServiceUnavailable) as info:
        client.get_candles("BTC-USD", "1h", T0, T0 + timedelta(hours=1))
    message = str(info.value)
    assert "Coinbase is unreachable" in message and "connection refused" in message
    assert "--source synthetic" in message
    assert len(sleep.calls) == 1  # fail fast: one retry only


def test_401_authentication_failed(sim: Simulator, ec_key: CdpKey) -> None:
    # The simulator does not know this key: every token is refused.
    client = make_client(sim, ec_key)
    with pytest.raises(AuthError, match=r"authentication failed .*\(check key name and key\)$") as info:
        client.get_candles("BTC-USD", "1h", T0, T0 + timedelta(hours=2))
    assert ec_key.name in str(info.value)
    assert [r.status for r in sim.requests] == [401, 401]  # one retry with a fresh token, then give up


def test_403_missing_permission(sim: Simulator, ec_key: CdpKey) -> None:
    sim.register_key(ec_key, can_view=False)
    with pytest.raises(AuthError, match="missing a required permission.*Missing required scopes.*'View'"):
        make_client(sim, ec_key).get_product("BTC-USD")


def test_400_names_the_argument(sim: Simulator) -> None:
    client = make_client(sim)
    with pytest.raises(ValidationError, match=r"^Coinbase rejected limit=5000: limit argument is invalid$"):
        client.product_book("BTC-USD", limit=5000)


def test_over_cap_window_is_rejected_and_names_start_and_end() -> None:
    with Simulator(SimConfig(public_rate=None, candle_cap=100)) as sim:
        with pytest.raises(ValidationError, match="Coinbase rejected start='.*', end='.*': .*number of candles"):
            make_client(sim).get_candles("BTC-USD", "1m", T0, T0 + timedelta(minutes=200))


def test_authenticated_twins_when_a_key_is_configured(sim: Simulator, ed_key: CdpKey) -> None:
    sim.register_key(ed_key)
    client = CoinbaseClient.from_settings(
        Settings(coinbase_api_url=sim.api_url, coinbase_key_name=ed_key.name, coinbase_private_key=_ed_pem(ed_key)),
        limiter=NoRateLimit(),
    )
    candles = client.get_candles("BTC-USD", "1h", T0, T0 + timedelta(hours=3))
    assert len(candles["ts"]) == 3
    quotes = client.quotes(["BTC-USD", "ETH-USD"])
    assert [q.product for q in quotes] == ["BTC-USD", "ETH-USD"] and all(q.bid < q.ask for q in quotes)
    assert client.key_permissions()["can_view"] is True
    paths = [r.path for r in sim.requests]
    assert "/api/v3/brokerage/products/BTC-USD/candles" in paths and "/api/v3/brokerage/best_bid_ask" in paths
    assert all("/market/" not in p for p in paths)
    assert {r.key for r in sim.requests} == {ed_key.name}


def test_public_quotes_without_key_and_private_call_needs_key(sim: Simulator) -> None:
    client = make_client(sim)
    quotes = client.quotes(["BTC-USD"])
    assert quotes[0].source == "rest" and quotes[0].bid < quotes[0].ask and quotes[0].last > 0
    with pytest.raises(AuthError, match="needs a Coinbase API key"):
        client.best_bid_ask(["BTC-USD"])


def test_malformed_candle_is_a_data_error(sim: Simulator) -> None:
    from backfarm.coinbase.client import parse_candles

    with pytest.raises(DataError, match="malformed candle for BTC-USD"):
        parse_candles([{"start": "1", "open": "x"}], 0, 10, "BTC-USD")


def _ed_pem(key: CdpKey) -> str:
    from cryptography.hazmat.primitives import serialization

    return key._private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
