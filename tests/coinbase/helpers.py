"""Helpers for the Coinbase tests: CDP key generation, key files, a never-waiting client, free ports."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from backfarm.coinbase.auth import CdpKey
from backfarm.coinbase.client import CoinbaseClient, RetryPolicy
from backfarm.coinbase.ratelimit import NoRateLimit
from backfarm.simulator import Simulator

EC_NAME = "organizations/11111111-2222-3333-4444-555555555555/apiKeys/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
ED_NAME = "organizations/11111111-2222-3333-4444-555555555555/apiKeys/ffffffff-0000-1111-2222-333333333333"


def ec_pem() -> str:
    """A fresh EC P-256 private key as SEC1 PEM (what the CDP portal hands out)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def ed_pem() -> str:
    """A fresh Ed25519 private key as PKCS#8 PEM."""
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def write_key_file(path: Path, name: str, pem: str) -> Path:
    """A key file in the format Coinbase lets users download."""
    path.write_text(json.dumps({"name": name, "privateKey": pem, "nickname": "test", "scopes": ["rat#view"]}))
    return path


class SleepRecorder:
    """Stands in for ``time.sleep`` in the client: records the backoff delays instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)

    def clock(self) -> float:
        """A clock that moves only by the recorded sleeps (how long the client believes it has waited)."""
        return sum(self.calls)


def make_client(sim: Simulator, key: CdpKey | None = None, **kwargs: object) -> CoinbaseClient:
    """A client for ``sim`` that never waits: no rate limiter, recorded backoff sleeps, seeded jitter."""
    kwargs.setdefault("limiter", NoRateLimit())
    kwargs.setdefault("sleep", SleepRecorder())
    sleeper = kwargs["sleep"]
    if isinstance(sleeper, SleepRecorder):
        kwargs.setdefault("clock", sleeper.clock)
    kwargs.setdefault("retry", RetryPolicy(max_retries=3, base_delay=0.2, max_delay=1.0))
    kwargs.setdefault("rng", random.Random(1))
    kwargs.setdefault("timeout", (2.0, 5.0))
    return CoinbaseClient(sim.api_url, key, **kwargs)  # type: ignore[arg-type]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
