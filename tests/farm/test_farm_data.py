"""Candle fetches on the farm, against the Coinbase simulator (which answers 429 above 10 public requests/s).

Two workers fetch the same partitions at once (the data tasks of a sweep, each enqueued twice, plus the batches that
need the same candles): the per-partition Redis lock must make every candle page be requested once, and the shared
rate limit must keep the whole farm under Coinbase's 10 requests/s, so the simulator never answers 429.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from backfarm.farm.client import FarmClient
from backfarm.results.redis_store import RedisStore
from backfarm.simulator import SimConfig, Simulator
from backfarm.sweeps.expand import expand
from backfarm.sweeps.run import prepare_data
from backfarm.sweeps.spec import SweepSpec
from tests.farm.conftest import assert_exactly_once, submit
from tests.workers import Farm, wait_for

SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD")


def test_two_workers_fetch_each_partition_once_within_the_rate_limit(farm: Farm, chaos: None, tmp_path: Path) -> None:
    with Simulator(SimConfig(public_rate=10.0)) as sim:
        farm.env["BACKFARM_COINBASE_API_URL"] = sim.api_url
        settings = farm.settings
        spec = SweepSpec(strategies=("chaos",), symbols=SYMBOLS, granularity="1h", start="2025-03-01",
                         end="2025-06-01", days=None, params={"chaos": [{"every": 2}, {"every": 3}]},
                         source="coinbase")  # fmt: skip
        # The submitting machine checks the data in its own cache first (as on a machine of its own); only the
        # workers' fetches, into theirs, are counted.
        client = settings.with_(data_dir=tmp_path / "client")
        prepare_data(expand(spec), client)
        sim.clear_log()
        workers = farm.start("w1"), farm.start("w2")
        farm.ready(*workers)
        with RedisStore(settings.redis_url or "") as store, FarmClient(settings, store) as farm_client:
            windows = sorted({job.data_key for job in expand(spec).jobs})
            assert farm_client.enqueue_fetches(windows) == len(SYMBOLS)  # a duplicate set
            sweep_id = submit(client, store, spec)  # enqueues the fetches again, then the batches
            assert farm_client.wait(sweep_id, stall_s=10**6, timeout_s=90).complete
            assert_exactly_once(store, sweep_id)
            wait_for(
                lambda: store.conn.client.llen("data") == 0 and store.conn.client.hlen("unacked") == 0,
                60,
                "the fetches",
            )
        requests = list(sim.state.requests)
    statuses = Counter(r.status for r in requests)
    assert statuses.get(429, 0) == 0, statuses  # one budget for the whole farm
    pages = Counter((r.path, r.query.get("start", [""])[0]) for r in requests if r.path.endswith("/candles"))
    assert pages and max(pages.values()) == 1, [p for p, n in pages.items() if n > 1]  # each page fetched once
    assert len(pages) == len(SYMBOLS) * 9  # 3 months of 1h bars: 744, 720, 744 bars → 3 pages of 300 each
    for w in workers:
        assert "Traceback" not in w.text()
