"""Opt-in checks against the real api.coinbase.com (run with ``pytest --online`` where a network exists)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backfarm.candles.sources.coinbase import CoinbaseSource
from backfarm.coinbase.client import CoinbaseClient
from backfarm.config import Settings
from backfarm.errors import ValidationError

pytestmark = pytest.mark.online


@pytest.fixture(scope="module")
def client() -> CoinbaseClient:
    return CoinbaseClient.from_settings(Settings(coinbase_key_name=None, coinbase_private_key=None))


def test_server_time_is_close_to_ours(client: CoinbaseClient) -> None:
    assert abs((client.server_time() - datetime.now(UTC)).total_seconds()) < 120


def test_products_include_btc_usd_and_unknown_gets_a_suggestion(client: CoinbaseClient) -> None:
    ids = {p.product_id for p in client.list_products()}
    assert "BTC-USD" in ids
    with pytest.raises(ValidationError, match="did you mean 'BTC-USD'"):
        client.check_product("BTC-USDX")


def test_candles_page_across_requests_ascending_unique() -> None:
    source = CoinbaseSource.from_settings(Settings())
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    data = source.fetch("BTC-USD", "1m", end - timedelta(minutes=700), end)
    ts = data["ts"]
    assert len(ts) > 500 and (ts[1:] > ts[:-1]).all()
    assert (data["low"] <= data["high"]).all()
