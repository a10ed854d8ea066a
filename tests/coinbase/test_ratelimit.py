"""The client-side rate limiter: even spacing, per scope, thread-safe; and fetch throughput against the simulator."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest
import requests

from backfarm.candles.sources.coinbase import CoinbaseSource
from backfarm.coinbase.client import CoinbaseClient, RetryPolicy
from backfarm.coinbase.ratelimit import MAX_SLOWDOWN, RECOVERY_S, LocalRateLimiter, NoRateLimit
from backfarm.errors import RateLimited
from backfarm.simulator import SimConfig, Simulator, state
from tests.coinbase.helpers import make_client


class FakeClock:
    """A clock that only moves when the limiter sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now = max(self.now, self.now + seconds)


def test_public_calls_are_spaced_a_tenth_of_a_second_apart() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(25):
        limiter.acquire("public")
        starts.append(clock.now)
    assert np.allclose(np.diff(starts), 0.1)
    # At most 10 calls start in any one-second window [t, t + 1).
    starts_arr = np.array(starts)
    assert max(int(((starts_arr >= t) & (starts_arr < t + 1.0 - 1e-9)).sum()) for t in starts) == 10


def test_scopes_are_independent_and_private_is_30_per_second() -> None:
    limiter = LocalRateLimiter(clock=lambda: 0.0, sleep=lambda s: None)
    assert [round(limiter.reserve("private"), 6) for _ in range(4)] == [0.0, round(1 / 30, 6), round(2 / 30, 6), 0.1]
    assert limiter.reserve("public") == 0.0
    assert round(limiter.reserve("public"), 6) == 0.1


def test_a_429_holds_the_scope_back_and_halves_its_rate_until_it_recovers() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock, sleep=clock.sleep)
    assert limiter.reserve("public") == 0.0
    limiter.slow_down("public", 1.5)  # Retry-After: 1.5 s
    assert limiter.slowdown("public") == 2.0
    assert limiter.reserve("public") == pytest.approx(1.5)  # nothing starts before the server said
    assert limiter.reserve("public") == pytest.approx(1.5 + 0.2)  # then at 5/s, not 10/s
    assert limiter.reserve("private") == 0.0  # the other scope is not touched
    for _ in range(10):
        limiter.slow_down("public", 0.0)
    assert limiter.slowdown("public") == MAX_SLOWDOWN  # never slower than this
    clock.sleep(100.0)
    assert limiter.slowdown("public") == pytest.approx(MAX_SLOWDOWN * 0.5 ** (100.0 / RECOVERY_S))
    clock.sleep(1000.0)
    assert limiter.slowdown("public") == 1.0  # recovered
    start = limiter.reserve("public")
    assert limiter.reserve("public") - start == pytest.approx(0.1)


def test_a_429_storm_slows_the_client_to_what_the_server_allows() -> None:
    """The server allows 2 requests a second, the client's limiter starts at 10: the 429s slow it down until its
    requests get through, and every one of them does (none given up)."""
    with Simulator(SimConfig(public_rate=2.0)) as sim:
        limiter = LocalRateLimiter()
        client = CoinbaseClient(sim.api_url, limiter=limiter, timeout=(2.0, 5.0))
        for _ in range(16):
            client.server_time()
        statuses = [r.status for r in sim.requests]
        assert statuses.count(200) == 16
        assert statuses.count(429) <= 12, statuses  # it adapts instead of hammering
        assert limiter.slowdown("public") > 1.0


def test_idle_time_is_not_banked_as_burst() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(clock=clock, sleep=clock.sleep)
    limiter.acquire("public")
    clock.now += 5.0  # five idle seconds
    assert [round(limiter.reserve("public"), 6) for _ in range(3)] == [0.0, 0.1, 0.2]


def test_threads_share_the_budget() -> None:
    limiter = LocalRateLimiter(clock=lambda: 0.0, sleep=lambda s: None)
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            wait = limiter.reserve("public")
            with lock:
                waits.append(round(wait, 6))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == [round(i * 0.1, 6) for i in range(40)]  # 40 distinct slots, none shared


def test_client_stays_under_the_servers_limit_and_reaches_80_percent_of_it() -> None:
    """30 candle requests of 300 buckets through the real limiter: no 429, and ≥ 8 requests/s."""
    with Simulator(SimConfig(public_rate=10.0)) as sim:
        source = CoinbaseSource(CoinbaseClient(sim.api_url, limiter=LocalRateLimiter(), timeout=(2.0, 5.0)))
        start = datetime(2025, 6, 1, tzinfo=UTC)
        began = time.monotonic()
        candles = source.fetch("BTC-USD", "1m", start, start + timedelta(minutes=30 * 300))
        elapsed = time.monotonic() - began
        log = sim.candle_requests()
    assert len(candles["ts"]) == 9000
    assert [r.status for r in log].count(429) == 0 and len(log) == 30
    arrivals = np.array([r.at for r in log])
    span = arrivals.max() - arrivals.min()
    assert span >= 2.8  # 30 calls spaced ≥ 0.1 s apart (first one immediate)
    print(f"\ncoinbase fetch throughput vs simulator: {len(log) / elapsed:.2f} req/s, {9000 / elapsed:.0f} candles/s")
    # The pace the server saw, between the first and the last arrival: 10/s ideally. At least 8/s leaves 0.7 s for
    # requests that took longer than their 0.1 s slot on a busy machine; a limiter that waited too long fails it.
    assert (len(log) - 1) / span >= 8.0


def test_without_client_limiter_the_simulator_answers_429(monkeypatch: pytest.MonkeyPatch) -> None:
    # The server's bucket refills 10 tokens a second; with its clock stopped, exactly the burst of 10 is granted
    # however slowly this machine sends the requests.
    monkeypatch.setattr(state, "time", SimpleNamespace(monotonic=lambda: 0.0, time=time.time))
    with Simulator(SimConfig(public_rate=10.0)) as sim:
        with requests.Session() as session:
            answers = [session.get(f"{sim.api_url}/api/v3/brokerage/time", timeout=5) for _ in range(15)]
        client = make_client(sim, limiter=NoRateLimit(), retry=RetryPolicy(rate_limit_patience=5.0))
        with pytest.raises(RateLimited, match="still 429 after 5 s of slowing down"):
            client.server_time()  # the server's clock is stopped: every retry is refused too
    statuses = [a.status_code for a in answers]
    assert statuses == [200] * 10 + [429] * 5  # a one-second burst is allowed
    refused = answers[statuses.index(429)]
    assert refused.json()["error"] == "RATE_LIMIT_EXCEEDED"
    assert refused.headers["x-ratelimit-limit"] == "10" and refused.headers["x-ratelimit-remaining"] == "0"
