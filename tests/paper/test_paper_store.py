"""The session store contract, on SQLite and on a real Redis: leases, fenced commits, fills kept once, trimmed
lists, stop flags, id prefixes, and the watchdog's view of orphaned sessions."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backfarm.errors import ValidationError
from backfarm.paper.accounts import Fill, RoundTrip
from backfarm.paper.spec import build_spec
from backfarm.paper.store.base import Commit, LeaseLost, SessionStore
from backfarm.paper.store.redis_store import RedisSessionStore
from backfarm.paper.store.sqlite import SQLiteSessionStore
from tests.workers import wait_for


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    if request.param == "sqlite":
        made: SessionStore = SQLiteSessionStore(tmp_path / "paper.sqlite")
    else:
        made = RedisSessionStore(request.getfixturevalue("redis_url"))
    try:
        yield made
    finally:
        made.close()


def _spec(session_id: str, created: float = 0.0):  # type: ignore[no-untyped-def]
    spec = build_spec(["momentum"], ["BTC-USD"], 600, session_id=session_id)
    return type(spec).from_dict({**spec.to_dict(), "created_at": created or time.time()})


def _fill(account: str, bar: int, price: float) -> Fill:
    return Fill(f"{account}:{bar}:rebalance", account, bar, bar * 60, "buy", 1.5, price, 0.01, "rebalance", 0, price,
                math.nan, math.nan, 10.0, 1.5)  # fmt: skip


def test_lease_is_exclusive_renewable_and_fences_commits(store: SessionStore) -> None:
    store.create(_spec("p0000000001"))
    assert store.acquire("p0000000001", "a", 5.0)
    assert store.acquire("p0000000001", "a", 5.0)  # re-entrant for its holder
    assert not store.acquire("p0000000001", "b", 5.0)
    assert store.renew("p0000000001", "a", 5.0) and not store.renew("p0000000001", "b", 5.0)
    assert store.lease_alive("p0000000001")
    with pytest.raises(LeaseLost):
        store.commit("p0000000001", "b", Commit(cursor={"x": 1}))
    assert store.checkpoint("p0000000001") is None  # nothing written by the impostor
    store.release("p0000000001", "b")  # not b's to release
    assert store.lease_alive("p0000000001")
    store.release("p0000000001", "a")
    assert not store.lease_alive("p0000000001") and store.acquire("p0000000001", "b", 0.2)
    wait_for(lambda: not store.lease_alive("p0000000001"), 5, "the lease to expire, as a dead runner's does")
    assert store.acquire("p0000000001", "c", 5.0)


def test_commits_keep_each_fill_once_and_cut_lists_back_to_the_checkpoint(store: SessionStore) -> None:
    sid = "p0000000002"
    store.create(_spec(sid))
    assert store.acquire(sid, "t", 5.0)
    first = Commit(
        cursor={"bars_done": {"BTC-USD": 2}},
        accounts={"momentum@BTC-USD": [1.0, 2.0, math.inf]},
        fills=[_fill("momentum@BTC-USD", 1, 100.0)],
        trades=[RoundTrip("momentum@BTC-USD:0", "momentum@BTC-USD", 0, 1, 99.0, 100.0, 1.5, 1.2, 0.01, "signal")],
        equity=[[0, 0, 0, 10.0], [0, 1, 60, 11.0]],
        bars=[{"symbol": "BTC-USD", "ts": 0, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0}],
    )
    assert store.commit(sid, "t", first) == 0
    # A replayed commit (a resumed runner redoing the same bar): the fill is not recorded twice, lists are not grown.
    replay = Commit(
        cursor={"bars_done": {"BTC-USD": 2}},
        fills=[_fill("momentum@BTC-USD", 1, 100.0), _fill("momentum@BTC-USD", 2, 101.0)],
        equity=[[0, 1, 60, 11.5]],
        equity_from=1,
    )
    assert store.commit(sid, "t", replay) == 1
    assert [f.fill_id for f in store.fills(sid)] == ["momentum@BTC-USD:1:rebalance", "momentum@BTC-USD:2:rebalance"]
    assert store.fills(sid)[0].price == 100.0
    assert store.equity(sid) == [[0, 0, 0, 10.0], [0, 1, 60, 11.5]]
    assert [t.trade_id for t in store.trades(sid)] == ["momentum@BTC-USD:0"]
    checkpoint = store.checkpoint(sid)
    assert checkpoint is not None and checkpoint.cursor == {"bars_done": {"BTC-USD": 2}}
    assert checkpoint.accounts == {"momentum@BTC-USD": [1.0, 2.0, math.inf]}
    assert [b["ts"] for b in checkpoint.bars] == [0]


def test_status_stop_resumes_prefixes_and_orphans(store: SessionStore) -> None:
    store.create(_spec("pabc0000001", created=1.0))
    store.create(_spec("pabd0000002", created=2.0))
    assert store.session_ids() == ["pabd0000002", "pabc0000001"]
    assert store.resolve("pabc") == "pabc0000001"
    with pytest.raises(ValidationError, match="ambiguous"):
        store.resolve("pab")
    with pytest.raises(ValidationError, match="no paper session 'zzz'"):
        store.resolve("zzz")
    assert not store.stop_requested("pabc0000001")
    store.request_stop("pabc0000001")
    assert store.stop_requested("pabc0000001") and store.get("pabc0000001").stop_requested
    store.update("pabc0000001", status="running", worker="host:1")
    assert store.bump_resumes("pabc0000001") == 1
    info = store.get("pabc0000001")
    assert (info.status, info.worker, info.resumes) == ("running", "host:1", 1)
    assert info.orphaned  # running, and nobody holds its lease
    assert store.acquire("pabc0000001", "t", 5.0) and not store.get("pabc0000001").orphaned
    assert sorted(store.active_ids()) == ["pabc0000001", "pabd0000002"]
    store.update("pabd0000002", status="finished", final={"momentum@BTC-USD": {"sharpe": None}})
    assert store.active_ids() == ["pabc0000001"]
    assert store.get("pabd0000002").final == {"momentum@BTC-USD": {"sharpe": None}}


class _RecordingApp:
    """Stands in for the Celery app: records what would be published."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple, dict]] = []

    def send_task(self, name: str, args: tuple, **options: object) -> None:
        self.sent.append((name, args, options))


def test_watchdog_requeues_each_orphan_once(redis_url: str) -> None:
    from backfarm.farm.tasks.paper import requeue_orphans

    store = RedisSessionStore(redis_url)
    store.create(_spec("porphan0001"))
    store.create(_spec("palive00002"))
    store.create(_spec("pqueued0003"))
    store.update("porphan0001", status="running")
    store.update("palive00002", status="running")
    assert store.acquire("palive00002", "runner", 30.0)
    app = _RecordingApp()
    assert requeue_orphans(app, store) == ["porphan0001"]  # type: ignore[arg-type]
    assert requeue_orphans(app, store) == []  # type: ignore[arg-type]  # claimed: the fleet enqueues it once
    ((name, args, options),) = app.sent
    assert (name, args, options["queue"]) == ("backfarm.paper.session", ("porphan0001",), "paper")
    assert options["soft_time_limit"] < options["time_limit"]
    store.close()
