"""Shared fixtures: a private Redis server for the session and a clean database per test.

The project root is put on ``sys.path`` so that tests import shared helpers as ``tests.…`` (e.g.
``tests.redis_server``, ``tests.results.contract``) however pytest is started (``pytest`` or ``python -m pytest``).
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.redis_server import RedisServer  # noqa: E402 - needs ROOT on sys.path

# Tests interrupt the commands they start (SIGINT, as Ctrl-C does). A shell that starts the suite in the background
# (`cmd &` without job control) makes SIGINT ignored, and an ignored signal stays ignored in every process started
# from here, so those commands would never see their Ctrl-C. Take the default back for this process and its children.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Property-based tests draw the same examples on every run by default ("ci"): a run that passed passes again, and a
# bug is found when an example is added or the code changes, not by chance in someone else's CI run. Search for new
# counterexamples with HYPOTHESIS_PROFILE=explore (random draws); add what it finds as an @example.
hypothesis_settings.register_profile("ci", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One password-protected ``redis-server`` on a free port for the whole session (started on first use)."""
    server = RedisServer(password=secrets.token_hex(8), directory=tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, with every database emptied first (FLUSHALL on our own server, never 6379)."""
    client = redis_server.client()
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--online", action="store_true", default=False, help="Also run tests/online against the real Coinbase API."
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Online tests are opt-in: without ``--online`` they are deselected (not skipped), so a normal run is complete."""
    if config.getoption("--online"):
        return
    kept = [item for item in items if "online" not in item.keywords]
    dropped = [item for item in items if "online" in item.keywords]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
