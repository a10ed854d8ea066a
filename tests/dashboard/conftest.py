"""Real results for the dashboard tests: one small synthetic grid sweep through the CLI, shared by the session."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from backfarm.cli import app
from backfarm.config import Settings
from backfarm.core.results import Filters, ResultRecord
from backfarm.dashboard.server import Dashboard, start
from backfarm.results.embedded import EmbeddedStore


@dataclass(frozen=True)
class Results:
    """A data directory holding one finished sweep (plus one paper result) in its embedded store."""

    env: dict[str, str]
    settings: Settings
    sweep_id: str
    total: int
    paper_id: str

    def store(self) -> EmbeddedStore:
        return EmbeddedStore(self.settings.store_path)


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; a crash (not an exit code) is re-raised."""
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="session")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Results]:
    """190 backtests (ma_crossover and momentum grids on two symbols, 2 days of 1m bars) and one paper result."""
    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    env = {"BACKFARM_DATA_DIR": str(data_dir), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}
    code, out, err = invoke(
        env, "backtest", "--grid", "--days", "2", "--source", "synthetic", "--symbols", "BTC-USD,ETH-USD",
        "--strategies", "ma_crossover,momentum", "--top", "1", "--workers", "1",
    )  # fmt: skip
    assert code == 0, err
    settings = Settings.from_env(env)
    with EmbeddedStore(settings.store_path) as store:
        sweep = store.sweeps()[0]
        best = store.top("sharpe", 1, Filters(sweep=sweep.sweep_id))[0]
        paper = _paper_copy(best)
        store.put([paper])
    yield Results(env, settings, sweep.sweep_id, sweep.done, paper.job_id)


def _paper_copy(record: ResultRecord) -> ResultRecord:
    """A paper-trading result shaped like the paper sessions write them (kind=paper, session id in extra)."""
    return dataclasses.replace(
        record,
        job_id="paper-" + record.job_id[:18],
        kind="paper",
        extra={**record.extra, "session": "sess-test-1"},
    )


@contextmanager
def serving(dashboard: Dashboard) -> Iterator[str]:
    """Serve ``dashboard`` on a free port of 127.0.0.1 from a background event loop; yields its base URL."""
    loop = asyncio.new_event_loop()
    runner, url = loop.run_until_complete(start(dashboard, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def run_paper_session(env: dict[str, str], strategies: str, symbols: str, duration: str = "6h") -> str:
    """A finished replay paper session on synthetic candles (in ``env``'s data directory); returns its id."""
    code, out, err = invoke(
        env, "paper", "start", "--feed", "replay", "--speed", "max", "--strategies", strategies, "--symbols", symbols,
        "--duration", duration, "--source", "synthetic", "--wait",
    )  # fmt: skip
    assert code == 0, err
    return out.split()[0]
