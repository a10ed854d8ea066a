"""The dashboard's JSON endpoints over real results, on the embedded store and on Redis; auth, headers, errors."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from backfarm.candles.memo import CandleMemo
from backfarm.config import Settings
from backfarm.core.costs import Costs
from backfarm.core.jobs import Job
from backfarm.core.results import Filters, SweepRecord
from backfarm.dashboard.paper import PaperSessions
from backfarm.dashboard.server import LOCAL_NAMES, Dashboard, allowed_hosts, parse_auth
from backfarm.engine.artifacts import decode_equity, decode_trades
from backfarm.errors import ValidationError
from backfarm.execution.runner import run_job
from backfarm.results.embedded import EmbeddedStore
from backfarm.results.redis_store import RedisStore
from backfarm.results.store import ResultStore
from tests.dashboard.conftest import Results, invoke, run_paper_session, serving


@pytest.fixture(scope="module")
def sqlite_store(results: Results) -> Iterator[EmbeddedStore]:
    with results.store() as store:
        yield store


@pytest.fixture(scope="module")
def url(sqlite_store: EmbeddedStore, results: Results) -> Iterator[str]:
    board = Dashboard(sqlite_store, "test store", known_strategies=("breakout",), settings=results.settings)
    with serving(board) as base:
        yield base


def get(base: str, path: str, **kwargs: object) -> requests.Response:
    return requests.get(base + path.lstrip("/"), timeout=30, **kwargs)  # type: ignore[arg-type]


def ids(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [row["job_id"] for row in response.json()["rows"]]


def test_leaderboard_ranks_like_the_store(url: str, sqlite_store: EmbeddedStore, results: Results) -> None:
    assert ids(get(url, "/api/leaderboard")) == [r.job_id for r in sqlite_store.top("sharpe", 100)]
    sweep = Filters(sweep=results.sweep_id)
    by_return = get(url, f"/api/leaderboard?metric=total_return&order=asc&limit=7&sweep={results.sweep_id[:6]}")
    assert ids(by_return) == [r.job_id for r in sqlite_store.top("total_return", 7, sweep, ascending=True)]
    body = by_return.json()
    assert body["metric"] == "total_return" and body["ascending"] is True
    assert body["filters"]["sweep"] == results.sweep_id  # the prefix was resolved
    lowest_fees = ids(get(url, "/api/leaderboard?metric=fees_paid&limit=3"))  # lower is better: ascending
    assert lowest_fees == [r.job_id for r in sqlite_store.top("fees_paid", 3)]


def test_leaderboard_filters_and_rows(url: str, results: Results) -> None:
    rows = get(url, "/api/leaderboard?strategy=momentum&symbol=ETH-USD&limit=2000").json()["rows"]
    assert rows and {(r["strategy"], r["symbol"]) for r in rows} == {("momentum", "ETH-USD")}
    row = rows[0]
    assert row["has_curve"] is True and "extra" not in row  # curves come with the detail, not the table
    assert set(row["metrics"]) >= {"sharpe", "total_return", "max_drawdown", "trades", "win_rate"}
    paper = get(url, "/api/leaderboard?kind=paper").json()["rows"]
    assert [r["job_id"] for r in paper] == [results.paper_id]
    assert paper[0]["kind"] == "paper" and paper[0]["session"] == "sess-test-1"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("metric=sharp", "unknown metric 'sharp' (did you mean 'sharpe'?)"),
        ("kind=papr", "unknown kind 'papr' (did you mean 'paper'?)"),
        ("limit=0", "limit must be between 1 and 2000, got 0"),
        ("limit=ten", "limit must be a whole number, got 'ten'"),
        ("order=up", "unknown order 'up'"),
        ("sweep=nosuchsweep", "unknown sweep 'nosuchsweep'"),
    ],
)
def test_bad_parameters_are_400_with_one_line(url: str, query: str, message: str) -> None:
    response = get(url, "/api/leaderboard?" + query)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


def test_sweeps_strategies_and_paper(url: str, sqlite_store: EmbeddedStore, results: Results) -> None:
    body = get(url, "/api/sweeps").json()
    (sweep,) = body["sweeps"]
    assert sweep["sweep_id"] == results.sweep_id
    assert sweep["total"] == sweep["done"] == results.total and sweep["dead"] == 0 and sweep["complete"]
    assert sweep["strategies"] == ["ma_crossover", "momentum"] and sweep["source"] == "synthetic"
    assert {"ma_crossover", "momentum", "breakout"} <= set(body["facets"]["strategies"])  # registered ones too
    assert body["facets"]["symbols"] == ["BTC-USD", "ETH-USD"]
    table = get(url, f"/api/strategies?sweep={results.sweep_id}").json()["rows"]
    expected = sqlite_store.aggregate("strategy", Filters(sweep=results.sweep_id))
    assert [(r["key"], r["results"], r["trades"]) for r in table] == [(a.key, a.results, a.trades) for a in expected]
    assert sum(r["results"] for r in table) == results.total
    paper = get(url, "/api/paper").json()["rows"]
    assert [r["job_id"] for r in paper] == [results.paper_id]


def test_result_detail_and_curves(url: str, sqlite_store: EmbeddedStore) -> None:
    first, second = sqlite_store.top("sharpe", 2)
    detail = get(url, f"/api/result/{first.job_id}").json()
    assert detail["job_id"] == first.job_id and detail["curve_note"] is None
    assert detail["extra"]["equity"] == first.extra["equity"]  # served as stored; the page decodes it
    assert decode_equity(detail["extra"]).equity.tolist() == decode_equity(first.extra).equity.tolist()
    missing = get(url, "/api/result/nope")
    assert missing.status_code == 404 and missing.json() == {"error": "unknown result 'nope'"}
    curves = get(url, f"/api/curves?ids={first.job_id},{second.job_id},nope").json()["curves"]
    assert set(curves) == {first.job_id, second.job_id}
    assert curves[first.job_id]["capital"] == first.capital
    too_many = get(url, "/api/curves?ids=" + ",".join(f"id{i}" for i in range(21)))
    assert too_many.status_code == 400


def test_page_static_files_headers_and_read_only(url: str) -> None:
    page = get(url, "/")
    assert page.status_code == 200 and "<title>backfarm dashboard</title>" in page.text
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    script = get(url, "/static/app.js")
    assert script.status_code == 200 and "decodeEquity" in script.text
    assert get(url, "/static/vendor/uPlot.iife.min.js").status_code == 200
    assert get(url, "/static/%2e%2e/server.py").status_code in (403, 404)
    assert get(url, "/api/meta").headers["Cache-Control"] == "no-store"
    assert requests.post(url + "api/leaderboard", timeout=10).status_code == 405
    assert requests.delete(url + "api/result/x", timeout=10).status_code == 405


def test_basic_auth(sqlite_store: EmbeddedStore) -> None:
    with serving(Dashboard(sqlite_store, auth=("ann", "s3cret:x"))) as base:
        anonymous = get(base, "/api/meta")
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
        assert get(base, "/", auth=("ann", "wrong")).status_code == 401
        assert get(base, "/api/meta", headers={"Authorization": "Basic !!notbase64"}).status_code == 401
        assert get(base, "/api/meta", auth=("ann", "s3cret:x")).status_code == 200
        token = base64.b64encode(b"ann:s3cret:x").decode()
        assert get(base, "/", headers={"Authorization": f"basic {token}"}).status_code == 200
    assert parse_auth("ann:s3cret:x") == ("ann", "s3cret:x") and parse_auth(None) is None
    for bad in ("annonly", ":pw", "ann:"):
        with pytest.raises(ValidationError, match="--auth must look like user:password"):
            parse_auth(bad)


def test_only_the_hosts_it_serves_are_answered(sqlite_store: EmbeddedStore) -> None:
    """DNS rebinding: a page at attacker.example whose name resolves to 127.0.0.1 must not read the results. Requests
    by IP address, localhost, the --host name and --allow-host names are answered; any other name gets 421, before
    basic auth."""
    hosts = allowed_hosts("0.0.0.0", ["farm.example.internal", "Board.Example."])
    assert hosts == LOCAL_NAMES | {"farm.example.internal", "board.example"}
    with serving(Dashboard(sqlite_store, auth=("ann", "pw"), allowed_hosts=hosts)) as base:
        port = base.rstrip("/").rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]:8000", "10.1.2.3", "farm.example.internal:80",
                     "BOARD.example.", "LocalHost"):  # fmt: skip
            assert get(base, "/api/meta", headers={"Host": host}, auth=("ann", "pw")).status_code == 200, host
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.nip.io", "", "localhost.evil.com"):
            refused = get(base, "/api/meta", headers={"Host": host})
            assert refused.status_code == 421, host
            assert "does not serve the host" in refused.json()["error"]
            assert get(base, "/", headers={"Host": host}, auth=("ann", "pw")).status_code == 421


def test_cli_rejects_bad_flags(results: Results) -> None:
    code, _, err = invoke(results.env, "dashboard", "--auth", "nocolon")
    assert code == 2 and err.strip() == "error: --auth must look like user:password"
    code, _, err = invoke(results.env, "dashboard", "--port", "70000")
    assert code == 2 and "--port must be between 0 and 65535" in err
    code, _, err = invoke(results.env, "dashboard", "--refresh", "0.1")
    assert code == 2 and "--refresh must be between 0.5 and 3600 seconds" in err


def _copy(source: ResultStore, target: ResultStore) -> None:
    for info in source.sweeps():
        manifest = tuple(source.manifest(info.sweep_id))
        target.create_sweep(SweepRecord(info.sweep_id, info.created_at, info.spec, manifest, info.source))
    target.put(list(source.iter_results()))


def test_the_same_page_over_redis(redis_url: str, sqlite_store: EmbeddedStore, results: Results) -> None:
    with RedisStore(redis_url) as redis_store:
        _copy(sqlite_store, redis_store)
        with serving(Dashboard(redis_store, "redis")) as base:
            query = f"/api/leaderboard?metric=total_return&limit=10&sweep={results.sweep_id[:8]}"
            assert ids(get(base, query)) == ids(get_sqlite(sqlite_store, query))
            assert get(base, "/api/sweeps").json()["sweeps"][0]["done"] == results.total
            best = redis_store.top("sharpe", 1)[0]
            assert decode_equity(get(base, f"/api/result/{best.job_id}").json()["extra"]) is not None
            assert [r["job_id"] for r in get(base, "/api/paper").json()["rows"]] == [results.paper_id]
            table = get(base, "/api/strategies").json()["rows"]
            assert sum(r["results"] for r in table) == results.total + 1  # plus the paper result


def get_sqlite(store: EmbeddedStore, path: str) -> requests.Response:
    with serving(Dashboard(store)) as base:
        return get(base, path)


def test_a_result_stored_without_a_curve_gets_one_recomputed(results: Results) -> None:
    """Results stored before curves were kept (reused, never recomputed, by reruns) are redrawn in memory."""
    with results.store() as source:
        template = next(r for r in source.top("sharpe", 50) if r.strategy == "ma_crossover")
    job = Job(
        strategy="ma_crossover", strategy_version=template.strategy_version, params={"fast": 7, "slow": 77},
        symbol=template.symbol, granularity=template.granularity, start=template.start, end=template.end,
        source=template.source, costs=Costs(**template.costs), capital=template.capital,
    )  # fmt: skip
    candles, indicators = CandleMemo(results.settings).get(job.data_key)
    fresh = run_job(job, candles, indicators)
    legacy = dataclasses.replace(fresh, extra={})
    path = results.settings.data_dir.parent / "legacy"
    with EmbeddedStore(path) as store:
        store.put([legacy])
        with serving(Dashboard(store, settings=results.settings)) as base:
            detail = get(base, f"/api/result/{legacy.job_id}").json()
        assert store.get(legacy.job_id).extra == {}  # read-only: nothing written back
        with serving(Dashboard(store)) as base:  # without settings there is no recompute
            assert get(base, f"/api/result/{legacy.job_id}").json()["extra"] == {}
    assert detail["extra"]["recomputed"] is True and detail["curve_note"] is None
    assert detail["extra"]["equity"] == fresh.extra["equity"]


def test_paper_sessions_accounts_and_curves(tmp_path: Path) -> None:
    env = {"BACKFARM_DATA_DIR": str(tmp_path / "data"), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}
    settings = Settings.from_env(env)
    settings.data_dir.mkdir()
    sessions = PaperSessions(settings)
    with EmbeddedStore(settings.store_path) as store:
        with serving(Dashboard(store, sessions=sessions)) as base:
            assert get(base, "/api/paper").json() == {"rows": [], "sessions": []}  # no session store yet
        assert not (settings.data_dir / "paper.sqlite").exists()  # and the dashboard did not create one
        session_id = run_paper_session(env, "ma_crossover,momentum", "ETH-USD")
        with serving(Dashboard(store, sessions=sessions)) as base:
            body = get(base, "/api/paper").json()
            (live,) = body["sessions"]
            assert live["session_id"] == session_id and live["status"] == "finished" and not live["active"]
            assert live["bars_done"] == live["window_bars"] == 360 and live["feed"] == "replay"
            results = {r["strategy"]: r for r in body["rows"]}
            assert set(results) == {"ma_crossover", "momentum"}
            for account in live["accounts"]:
                final = results[account["strategy"]]
                assert account["symbol"] == "ETH-USD" and account["trades"] == final["metrics"]["trades"]
                assert account["return"] == pytest.approx(final["metrics"]["total_return"], abs=1e-9)
                assert account["pnl"] == pytest.approx(account["equity"] - live["capital"])
            curves = get(base, f"/api/paper/{session_id}").json()
            assert {c["account"] for c in curves["curves"]} == {"ma_crossover@ETH-USD", "momentum@ETH-USD"}
            assert all(len(c["ts"]) == len(c["equity"]) == 360 for c in curves["curves"])
            assert get(base, "/api/paper/nope").status_code == 404
            # A paper result's own curve and trades are rebuilt from its session's equity marks and round trips.
            final = results["momentum"]
            detail = get(base, f"/api/result/{final['job_id']}").json()
            curve, trades = decode_equity(detail["extra"]), decode_trades(detail["extra"])
            assert curve.bars == 360 and trades.total == final["metrics"]["trades"]
            assert curve.equity[-1] == pytest.approx(live["capital"] * (1 + final["metrics"]["total_return"]), rel=1e-6)
    sessions.close()
