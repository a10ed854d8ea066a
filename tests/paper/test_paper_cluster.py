"""On the farm: a paper session on a real worker is SIGKILLed mid-way and resumes on another worker.

The visibility timeout is long (120 s), so the resume comes from the paper watchdog of the new worker (orphan
detection through the expired lease), not from Celery's redelivery. The session must end with every fill recorded
exactly once and exactly the fills, trades and metrics of the same replay run without interruption.
"""

from __future__ import annotations

from pathlib import Path

from backfarm.config import Settings
from backfarm.core.results import Filters
from backfarm.results.redis_store import RedisStore
from tests.paper.conftest import FAST_PARAMS, bars_done, replay_spec, run_on_worker, uninterrupted
from tests.workers import Farm, wait_for

STRATEGIES = ["momentum", "mean_reversion", "breakout"]
SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD"]


def test_sigkilled_worker_resumes_elsewhere_with_each_fill_once(
    paper_farm: Farm, paper_env: dict[str, str], tmp_path: Path
) -> None:
    settings = Settings.from_env(paper_env)
    # 120 one-minute bars at 900× real time: 8 s of wall clock, long enough to kill the worker in the middle.
    spec = replay_spec(STRATEGIES, SYMBOLS, "2h", "2024-06-03T00:00:00Z", speed=900, params=FAST_PARAMS, lease_s=2.0)

    # The same session, uninterrupted, in this process at max speed: the expected outcome.
    local, reference_spec, expected = uninterrupted(
        settings, tmp_path, STRATEGIES, SYMBOLS, "2h", "2024-06-03T00:00:00Z", params=FAST_PARAMS
    )
    expected_fills = [(f.fill_id, f.side, f.qty, f.price) for f in local.fills(reference_spec.session_id)]
    assert len(expected_fills) > 20

    store, first = run_on_worker(paper_farm, "first", settings, spec, bars=30)
    first.kill()
    killed_at = bars_done(store, spec.session_id)
    assert killed_at < spec.window_bars, "the session finished before the kill: make it slower"
    info = store.get(spec.session_id)
    assert info.status == "running"

    second = paper_farm.start("second")
    paper_farm.ready(second)
    wait_for(lambda: store.get(spec.session_id).status == "finished", 60, "the session to finish on the second worker")

    info = store.get(spec.session_id)
    assert info.resumes >= 1 and not info.error
    assert "re-enqueued to resume" in second.text()
    fills = store.fills(spec.session_id)
    ids = [f.fill_id for f in fills]
    assert len(ids) == len(set(ids))
    assert [(f.fill_id, f.side, f.qty, f.price) for f in fills] == expected_fills
    assert len(store.equity(spec.session_id)) == spec.window_bars * len(SYMBOLS)
    for key, metrics in expected.metrics.items():
        assert info.final[key] == metrics, key

    with RedisStore(settings.redis_url) as board:
        records = list(board.iter_results(Filters(kind="paper")))
    assert len(records) == len(STRATEGIES) * len(SYMBOLS)
    assert {r.extra["session"] for r in records} == {spec.session_id}
    assert {r.extra["final_equity"] for r in records} == set(expected.final_equity.values())
    store.close()
