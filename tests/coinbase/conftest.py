"""Fixtures for the Coinbase tests: generated CDP keys (ES256 and Ed25519) and a simulator on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backfarm.coinbase.auth import CdpKey
from backfarm.simulator import SimConfig, Simulator
from tests.coinbase.helpers import EC_NAME, ED_NAME, ec_pem, ed_pem


@pytest.fixture(scope="session")
def ec_key_pem() -> str:
    return ec_pem()


@pytest.fixture(scope="session")
def ed_key_pem() -> str:
    return ed_pem()


@pytest.fixture(scope="session")
def ec_key(ec_key_pem: str) -> CdpKey:
    return CdpKey.from_pem(EC_NAME, ec_key_pem)


@pytest.fixture(scope="session")
def ed_key(ed_key_pem: str) -> CdpKey:
    return CdpKey.from_pem(ED_NAME, ed_key_pem)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A fast simulator: no public rate limit (tests that need it build their own), quick ticks and heartbeats."""
    config = SimConfig(public_rate=None, tick_interval=0.05, heartbeat_interval=0.2, subscribe_deadline=2.0)
    with Simulator(config) as simulator:
        yield simulator
