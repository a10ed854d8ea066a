"""The simulator itself, over real sockets: Coinbase's shapes and errors, JWT checks, SDK quirks, the WebSocket feed."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import requests
from websockets.sync.client import connect

from backfarm.coinbase.auth import CdpKey
from backfarm.simulator import Faults, FormulaMarket, SimConfig, Simulator
from backfarm.simulator.market import PRODUCTS
from tests.coinbase.helpers import EC_NAME, ec_pem, make_client

P = "/api/v3/brokerage"
A = int(datetime(2025, 1, 10, tzinfo=UTC).timestamp())


def _get(sim: Simulator, path: str, token: str | None = None, **params: object) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(sim.api_url + P + path, params=params, headers=headers, timeout=5)  # type: ignore[arg-type]


def _uri(sim: Simulator, path: str) -> str:
    return f"GET 127.0.0.1:{sim.port}{P}{path}"


# ------------------------------------------------------------------------------------------------- REST shapes


def test_candles_shape_errors_and_listing(sim: Simulator) -> None:
    ok = _get(sim, "/market/products/BTC-USD/candles", start=A, end=A + 600, granularity="FIVE_MINUTE")
    assert ok.status_code == 200 and ok.headers["Content-Type"].startswith("application/json")
    assert b" " not in ok.content  # compact JSON
    assert [c["start"] for c in ok.json()["candles"]] == [str(A + 600), str(A + 300), str(A)]
    cases = {
        "granularity argument is invalid": dict(start=A, end=A + 60, granularity="FOUR_HOUR"),
        "start argument is required": dict(end=A + 60, granularity="ONE_MINUTE"),
        "end argument is invalid": dict(start=A, end="soon", granularity="ONE_MINUTE"),
        "number of candles requested should be at most 300": dict(start=A, end=A + 300 * 60, granularity="ONE_MINUTE"),
    }
    for text, params in cases.items():
        bad = _get(sim, "/market/products/BTC-USD/candles", **params)
        assert bad.status_code == 400 and bad.json()["error"] == "INVALID_ARGUMENT", text
        assert text in bad.json()["error_details"] and bad.json()["message"] == bad.json()["error_details"]
    at_cap = _get(sim, "/market/products/BTC-USD/candles", start=A, end=A + 299 * 60, granularity="ONE_MINUTE")
    assert len(at_cap.json()["candles"]) == 300
    missing = _get(sim, "/market/products/BTC-USDX/candles", start=A, end=A + 60, granularity="ONE_MINUTE")
    assert missing.status_code == 404 and missing.json()["error"] == "NOT_FOUND"
    before_listing = _get(
        sim, "/market/products/POL-USD/candles", start=A - 86400 * 200, end=A - 86400 * 190, granularity="ONE_DAY"
    )
    assert before_listing.json() == {"candles": []}  # POL-USD was listed 2024-09-04 (MATIC's successor)


def test_product_list_time_and_book_shapes(sim: Simulator) -> None:
    body = _get(sim, "/market/products").json()
    assert body["num_products"] == len(PRODUCTS) and body["pagination"] is None
    btc = next(p for p in body["products"] if p["product_id"] == "BTC-USD")
    assert isinstance(btc["price"], str) and btc["quote_increment"] == "0.01" and btc["status"] == "online"
    assert next(p for p in body["products"] if p["product_id"] == "BTC-USDC")["alias"] == "BTC-USD"
    assert btc["alias_to"] == ["BTC-USDC"]
    clock = _get(sim, "/time").json()
    assert isinstance(clock["epochSeconds"], str) and isinstance(clock["epochMillis"], str)
    assert clock["iso"].endswith("Z")
    book = _get(sim, "/market/product_book", product_id="ETH-USD", limit=2).json()
    assert set(book) == {"pricebook", "last", "mid_market", "spread_bps", "spread_absolute"}
    assert len(book["pricebook"]["bids"]) == 2 and isinstance(book["pricebook"]["bids"][0]["price"], str)
    assert _get(sim, "/market/product_book").json()["error_details"] == "product_id argument is required"
    assert _get(sim, "/nowhere").status_code == 401  # private namespace: auth comes first
    assert _get(sim, "/market/nowhere").json()["error"] == "NOT_FOUND"


def test_accepts_what_the_official_sdk_sends(sim: Simulator) -> None:
    # requests' json={} on a GET: a "{}" body with Content-Length 2; capitalised booleans; repeated list keys.
    answer = requests.get(
        sim.api_url + P + "/market/products",
        params=[
            ("product_ids", "BTC-USD"),
            ("product_ids", "ETH-USD"),
            ("get_tradability_status", "False"),
            ("get_all_products", "True"),
        ],
        json={},
        timeout=5,
    )
    assert answer.status_code == 200
    assert [p["product_id"] for p in answer.json()["products"]] == ["BTC-USD", "ETH-USD"]
    bad = _get(sim, "/market/products", get_all_products="maybe")
    assert bad.status_code == 400 and bad.json()["error_details"] == "get_all_products argument is invalid"


def test_public_paths_ignore_authorization(sim: Simulator) -> None:
    assert _get(sim, "/market/products/BTC-USD", token="not-a-jwt").status_code == 200


def test_every_401_case(sim: Simulator, ec_key: CdpKey, ed_key: CdpKey) -> None:
    sim.register_key(ec_key)
    sim.register_key(ed_key)
    path = "/products/BTC-USD"
    impostor = CdpKey.from_pem(EC_NAME, ec_pem())
    stranger = CdpKey.from_pem("organizations/o/apiKeys/stranger", ec_pem())
    tokens = {
        "no token": None,
        "garbage": "abc.def.ghi",
        "bad signature": impostor.jwt(_uri(sim, path)),
        "expired": ec_key.jwt(_uri(sim, path), now=time.time() - 300),
        "wrong uri": ec_key.jwt(_uri(sim, "/products/ETH-USD")),
        "wrong host": ec_key.jwt(f"GET api.coinbase.com{P}{path}"),
        "unknown key": stranger.jwt(_uri(sim, path)),
    }
    for case, token in tokens.items():
        answer = _get(sim, path, token=token)
        assert (answer.status_code, answer.text) == (401, "Unauthorized"), case
        assert answer.headers["Content-Type"].startswith("text/plain"), case
    for key in (ec_key, ed_key):
        assert _get(sim, path, token=key.jwt(_uri(sim, path))).json()["product_id"] == "BTC-USD"


def test_key_permissions_and_403(sim: Simulator, ec_key: CdpKey) -> None:
    sim.register_key(ec_key, can_view=False)
    perms = _get(sim, "/key_permissions", token=ec_key.jwt(_uri(sim, "/key_permissions"))).json()
    assert perms["can_view"] is False and perms["can_trade"] is False and "portfolio_uuid" in perms
    denied = _get(sim, "/best_bid_ask", token=ec_key.jwt(_uri(sim, "/best_bid_ask")))
    assert denied.status_code == 403 and denied.json()["error_details"] == "Missing required scopes"


def test_best_bid_ask_shape(sim: Simulator, ec_key: CdpKey) -> None:
    sim.register_key(ec_key)
    body = requests.get(
        sim.api_url + P + "/best_bid_ask",
        params=[("product_ids", "BTC-USD"), ("product_ids", "SOL-USD")],
        headers={"Authorization": f"Bearer {ec_key.jwt(_uri(sim, '/best_bid_ask'))}"},
        timeout=5,
    ).json()
    assert [b["product_id"] for b in body["pricebooks"]] == ["BTC-USD", "SOL-USD"]
    assert all(len(b["bids"]) == len(b["asks"]) == 1 for b in body["pricebooks"])


def test_candles_are_deterministic_across_servers_and_markets() -> None:
    for market in (None, FormulaMarket(seed=4)):
        answers = []
        for _ in range(2):
            with Simulator(SimConfig(public_rate=None), market=market) as sim:
                answers.append(
                    _get(
                        sim, "/market/products/LINK-USD/candles", start=A, end=A + 3600 * 20, granularity="ONE_HOUR"
                    ).json()
                )
        assert answers[0] == answers[1] and len(answers[0]["candles"]) == 21


def test_formula_market_candles_are_consistent() -> None:
    market = FormulaMarket(seed=1)
    product = PRODUCTS[0]
    bars = market.candles(product, 60, A, A + 600 * 60, now=A + 10**7)
    assert np.array_equal(bars["ts"], A + 60 * np.arange(601))
    assert (bars["high"] >= np.maximum(bars["open"], bars["close"])).all()
    assert (bars["low"] <= np.minimum(bars["open"], bars["close"])).all()
    assert np.array_equal(bars["open"][1:], bars["close"][:-1])  # each bar opens at the previous close
    open_bar = market.candles(product, 3600, A, A + 3600, now=A + 3600 + 120)  # the last bar is 2 minutes old
    assert open_bar["close"][-1] == market.price_at(product, A + 3600 + 120)


def test_error_rate_is_seeded(sim: Simulator) -> None:
    sim.faults.error_rate = 0.5
    statuses = [_get(sim, "/time").status_code for _ in range(20)]
    with Simulator(SimConfig(public_rate=None), Faults(error_rate=0.5)) as twin:
        assert [_get(twin, "/time").status_code for _ in range(20)] == statuses
    assert set(statuses) == {200, 503}


# --------------------------------------------------------------------------------------------------- WebSocket


def _recv(ws: object, n: int) -> list[dict]:
    return [json.loads(ws.recv(timeout=5)) for _ in range(n)]  # type: ignore[attr-defined]


def test_ws_envelope_subscriptions_snapshot_updates_and_heartbeats(sim: Simulator) -> None:
    with connect(sim.ws_url) as ws:
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "ticker"}))
        ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))  # no product_ids key: accepted
        messages = _recv(ws, 14)
    assert [m["sequence_num"] for m in messages] == list(range(14))
    assert all(m["client_id"] == "" and m["timestamp"].endswith("Z") for m in messages)
    assert len(messages[0]["timestamp"].split(".")[1]) == 10  # nine fractional digits + Z
    assert messages[0]["channel"] == "subscriptions"
    assert messages[0]["events"] == [{"subscriptions": {"ticker": ["BTC-USD", "ETH-USD"]}}]
    snapshot = messages[1]
    assert snapshot["channel"] == "ticker" and snapshot["events"][0]["type"] == "snapshot"
    tickers = snapshot["events"][0]["tickers"]
    assert [t["product_id"] for t in tickers] == ["BTC-USD", "ETH-USD"]
    assert all(isinstance(t[k], str) for t in tickers for k in ("price", "best_bid", "best_ask", "best_bid_quantity"))
    updates = [m for m in messages[2:] if m["channel"] == "ticker"]
    assert updates and all(m["events"][0]["type"] == "update" and len(m["events"][0]["tickers"]) == 1 for m in updates)
    beats = [m["events"][0]["heartbeat_counter"] for m in messages if m["channel"] == "heartbeats"]
    assert beats == list(range(1, len(beats) + 1))


def test_ws_protocol_errors(sim: Simulator, ec_key: CdpKey) -> None:
    with connect(sim.ws_url) as ws:
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["ticker", "level2"]}))
        assert json.loads(ws.recv(timeout=5))["type"] == "error"
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "ticker", "jwt": "x.y.z"}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "error", "message": "authentication failure"}
        ws.send(json.dumps({"type": "subscribe", "product_ids": ["BTC-USDX"], "channel": "ticker"}))
        assert "unknown product BTC-USDX" in json.loads(ws.recv(timeout=5))["message"]
        ws.send(json.dumps({"type": "subscribe", "channel": "user"}))
        assert json.loads(ws.recv(timeout=5))["message"] == "authentication failure"
    sim.register_key(ec_key)
    with connect(sim.ws_url) as ws:
        ws.send(
            json.dumps({"type": "subscribe", "product_ids": ["SOL-USD"], "channel": "candles", "jwt": ec_key.ws_jwt()})
        )
        confirmation, candles = _recv(ws, 2)
    assert confirmation["events"] == [{"subscriptions": {"candles": ["SOL-USD"]}}]
    row = candles["events"][0]["candles"][0]
    assert (
        candles["events"][0]["type"] == "snapshot" and row["product_id"] == "SOL-USD" and int(row["start"]) % 300 == 0
    )


def test_ws_subscribe_deadline_closes_idle_sockets() -> None:
    with Simulator(SimConfig(subscribe_deadline=0.2)) as sim, connect(sim.ws_url) as ws:
        assert json.loads(ws.recv(timeout=5))["message"] == "subscribe deadline exceeded"
        with pytest.raises(Exception, match="1000|close"):
            ws.recv(timeout=5)


def test_ws_on_its_own_port_and_root_path() -> None:
    with Simulator(SimConfig(ws_port=0)) as sim:
        assert sim.ws_port != sim.port
        with connect(sim.ws_url.removesuffix("/ws")) as ws:
            ws.send(json.dumps({"type": "subscribe", "product_ids": [], "channel": "heartbeats"}))
            assert json.loads(ws.recv(timeout=5))["channel"] == "subscriptions"


def test_client_sees_simulated_speed() -> None:
    start = datetime(2024, 6, 1, tzinfo=UTC)
    before = time.monotonic()
    with Simulator(SimConfig(public_rate=None, start_time=start.timestamp(), speed=60.0)) as sim:
        time.sleep(0.5)  # real time for the simulated clock to run ahead in
        seen = (make_client(sim).server_time() - start).total_seconds()
    # 60 simulated seconds per real one since the simulator started: at least the 0.5 s slept, at most this block.
    assert 0.5 * 60 <= seen <= (time.monotonic() - before) * 60 + 1
