"""The dashboard and the report in a real browser (headless Chromium): rows, a sort, a drawn chart, live updates,
and a report that makes no network request. Screenshots are kept in ``tests/artifacts/`` (git-ignored)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backfarm.core.results import Filters, SweepRecord
from backfarm.engine.artifacts import MAX_TRADES
from backfarm.results.embedded import EmbeddedStore
from tests.dashboard.cdp import Browser
from tests.dashboard.conftest import Results, invoke, run_paper_session

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

ROW_IDS = "[...document.querySelectorAll('#board tbody tr')].map(tr => tr.dataset.job)"
PAINTED = """(() => {
  const canvas = document.querySelector('%s canvas');
  if (!canvas || !canvas.width) return null;
  const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0, blue = 0, red = 0;
  for (let i = 0; i < px.length; i += 4) {
    if (px[i + 3] === 0) continue;
    painted++;
    if (px[i + 2] > 150 && px[i] < 120) blue++;
    if (px[i] > 150 && px[i + 2] < 120) red++;
  }
  return {painted, blue, red, width: canvas.width, height: canvas.height};
})()"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chromium = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def copy(results: Results, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with a copy of the results (this module adds to it; the session's store stays as it is)."""
    data_dir = tmp_path_factory.mktemp("live") / "data"
    data_dir.mkdir()
    with results.store() as source, EmbeddedStore(data_dir / "results") as target:
        for info in source.sweeps():
            manifest = tuple(source.manifest(info.sweep_id))
            target.create_sweep(SweepRecord(info.sweep_id, info.created_at, info.spec, manifest, info.source))
        target.put(list(source.iter_results()))
    env = {"BACKFARM_DATA_DIR": str(data_dir), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}
    run_paper_session(env, "ma_crossover,momentum", "BTC-USD")
    return data_dir


@pytest.fixture(scope="module")
def live(copy: Path) -> Iterator[str]:
    """``backfarm dashboard --port 0`` as a real process over the copy; yields the URL it prints."""
    env = {**os.environ, "BACKFARM_DATA_DIR": str(copy), "BACKFARM_REDIS_URL": ""}
    command = [sys.executable, "-m", "backfarm", "dashboard", "--port", "0", "--refresh", "0.5"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        match = re.search(r"dashboard on (http://127\.0\.0\.1:\d+/) \(read-only", line)
        assert match, f"no URL printed: {line!r} {process.stderr.read() if process.stderr else ''}"
        yield match.group(1)
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0 and "stopped" in err


def test_dashboard_in_chromium(browser: Browser, live: str, copy: Path, results: Results) -> None:
    browser.navigate(live + "#limit=25")
    browser.wait_for(f"{ROW_IDS}.length === 25")
    # A plain load (no job in the URL) selects the top row and fetches its result once.
    browser.wait_for("document.body.dataset.ready && document.querySelector('#detail-info').children.length > 0")
    time.sleep(1.0)  # room for a second fetch to show up
    fetched = "performance.getEntriesByType('resource').filter(e => e.name.includes('/api/result/')).length"
    assert browser.evaluate(fetched) == 1
    latest = Filters(sweep=results.sweep_id)  # it opens on the latest sweep, as `backfarm leaderboard` does
    with EmbeddedStore(copy / "results") as store:
        assert browser.evaluate(ROW_IDS) == [r.job_id for r in store.top("sharpe", 25, latest)]
        everything = [r.job_id for r in store.top("sharpe", 25)]
        best_return = store.top("total_return", 1, latest)[0].job_id
        worst_return = store.top("total_return", 1, latest, ascending=True)[0].job_id
        third = store.top("sharpe", 3, latest)[2]
    assert browser.evaluate("document.querySelector('#f-sweep').value") == results.sweep_id
    assert f"sweep={results.sweep_id}" in browser.evaluate("location.hash")
    assert everything != browser.evaluate(ROW_IDS)  # "all results" holds the paper results too
    sweeps = browser.evaluate("[...document.querySelectorAll('#sweeps tbody tr')].map(tr => tr.textContent)")
    assert len(sweeps) == 1 and results.sweep_id[:12] in sweeps[0] and "complete" in sweeps[0]

    # A sort: click the "return" header (best first), then again (reversed).
    browser.evaluate("document.querySelector('#board th[data-metric=\"total_return\"]').click()")
    browser.wait_for(f"{ROW_IDS}[0] === {best_return!r}")
    values = browser.evaluate(
        "[...document.querySelectorAll('#board td[data-metric=\"total_return\"]')].map(td => td.dataset.value)"
    )
    numbers = [float(v) for v in values]
    assert len(numbers) == 25 and numbers == sorted(numbers, reverse=True)
    assert "sorted" in browser.evaluate("document.querySelector('#board th[data-metric=\"total_return\"]').className")
    browser.evaluate("document.querySelector('#board th[data-metric=\"total_return\"]').click()")
    browser.wait_for(f"{ROW_IDS}[0] === {worst_return!r}")

    # A click on a row draws that job's equity curve, drawdown and trade list.
    browser.evaluate("document.querySelector('#f-metric').value = 'sharpe'")
    browser.evaluate("document.querySelector('#f-metric').dispatchEvent(new Event('change'))")
    browser.wait_for(f"{ROW_IDS}[2] === {third.job_id!r}")
    browser.evaluate("document.querySelectorAll('#board tbody tr')[2].click()")
    browser.wait_for(f"document.querySelector('#detail-title').textContent.includes({third.strategy!r})")
    browser.wait_for("document.querySelector('#chart-equity').dataset.points > 1")
    equity = browser.wait_for(PAINTED % "#chart-equity")
    assert equity["painted"] > 1000 and equity["blue"] > 100, equity
    drawdown = browser.wait_for(PAINTED % "#chart-drawdown")
    assert drawdown["painted"] > 500 and drawdown["red"] > 50, drawdown
    trades = browser.evaluate("document.querySelectorAll('#detail-trades tbody tr').length")
    assert trades == min(third.metrics["trades"], MAX_TRADES)
    assert f"job={third.job_id}" in browser.evaluate("location.hash")
    compare = browser.wait_for(PAINTED % "#chart-compare")
    assert compare["painted"] > 1000

    # The paper session: its accounts with equity and P&L, and their curves.
    accounts = browser.wait_for("[...document.querySelectorAll('#paper-accounts tbody tr')].map(tr => tr.textContent)")
    assert len(accounts) == 2 and "ma_crossover@BTC-USD" in accounts[0] + accounts[1]
    assert "finished" in browser.evaluate("document.querySelector('#paper-sessions tbody').textContent")
    paper = browser.wait_for(PAINTED % "#chart-paper")
    assert paper["painted"] > 1000, paper

    # It updates without a reload: a paper result that lands in the store shows up by itself.
    with EmbeddedStore(copy / "results") as store:
        papers = len(list(store.iter_results(Filters(kind="paper"))))
        fresh = dataclasses.replace(third, job_id="paper-live-1", kind="paper", extra={"session": "sess-live"})
        store.put([fresh])
    browser.wait_for(f"document.querySelectorAll('#paper-results tbody tr').length === {papers + 1}")
    assert "sess-live" in browser.evaluate("document.querySelector('#paper-results tbody').textContent")
    shot = browser.screenshot(ARTIFACTS / "dashboard.png")
    assert len(shot) > 20_000

    # "All results" is one choice away, and an address that names it opens on it.
    with EmbeddedStore(copy / "results") as store:
        everything = [r.job_id for r in store.top("sharpe", 25)]
    browser.navigate(live + "#sweep=all&limit=25")
    browser.evaluate("location.reload()")
    browser.wait_for(f"JSON.stringify({ROW_IDS}) === {json.dumps(json.dumps(everything, separators=(',', ':')))}")
    assert browser.evaluate("document.querySelector('#f-sweep').value") == ""


def test_report_opens_offline_without_requests(browser: Browser, results: Results, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    code, _, err = invoke(results.env, "report", results.sweep_id, "--out", str(out))
    assert code == 0, err
    browser.navigate("about:blank")  # leave the live dashboard first: its polls must not count as this page's
    browser.send("Network.enable")
    browser.send(
        "Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1
    )
    try:
        browser.navigate(out.as_uri())
        browser.wait_for("document.body.dataset.ready === '1'")
        browser.wait_for(f"{ROW_IDS}.length === 100")
        equity = browser.wait_for(PAINTED % "#chart-equity")
        assert equity["painted"] > 1000 and equity["blue"] > 100, equity
        with results.store() as store:
            best_return = store.top("total_return", 1, Filters(sweep=results.sweep_id))[0].job_id
        browser.evaluate("document.querySelector('#board th[data-metric=\"total_return\"]').click()")
        browser.wait_for(f"{ROW_IDS}[0] === {best_return!r}")
        requested = browser.requests()
        assert requested and all(url.startswith("file:") for url in requested), requested
        assert browser.evaluate("performance.getEntriesByType('resource').length") == 0
        assert "report of sweep" in browser.evaluate("document.querySelector('#store').textContent")
        browser.screenshot(ARTIFACTS / "report.png")
    finally:
        browser.send(
            "Network.emulateNetworkConditions", offline=False, latency=0, downloadThroughput=-1, uploadThroughput=-1
        )
        browser.send("Network.disable")
