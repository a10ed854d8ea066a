"""``backfarm coinbase check | watch | sim`` against the simulator, through the root app (errors → exit 2)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from backfarm.cli import app
from backfarm.coinbase.auth import CdpKey
from backfarm.simulator import Simulator
from tests.coinbase.helpers import EC_NAME, ec_pem, free_port, write_key_file

runner = CliRunner()


@pytest.fixture
def env(sim: Simulator, tmp_path: Path) -> dict[str, str]:
    """Point backfarm at the simulator; no key unless a test adds one."""
    return {
        "BACKFARM_DATA_DIR": str(tmp_path / "data"),
        "BACKFARM_REDIS_URL": "",
        "BACKFARM_COINBASE_API_URL": sim.api_url,
        "BACKFARM_COINBASE_WS_URL": sim.ws_url,
        "BACKFARM_COINBASE_KEY_NAME": "",
        "BACKFARM_COINBASE_PRIVATE_KEY": "",
        "BACKFARM_COINBASE_KEY_FILE": "",
        "COLUMNS": "160",
    }


def invoke(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["coinbase", *args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _pem_body(pem: str) -> str:
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


def test_check_with_a_known_key(env: dict[str, str], sim: Simulator, tmp_path: Path) -> None:
    pem = ec_pem()
    sim.register_key(CdpKey.from_pem(EC_NAME, pem), can_view=True, can_trade=True)
    key_file = write_key_file(tmp_path / "key.json", EC_NAME, pem)
    code, out = invoke(env, "check", "--key-file", str(key_file))
    assert code == 0, out
    assert f"Coinbase key {EC_NAME} (ES256) works" in out
    assert "view: yes, trade: yes, transfer: no" in out
    assert _pem_body(pem)[:20] not in out


def test_check_with_an_unknown_key_is_one_line_exit_2(env: dict[str, str]) -> None:
    pem = ec_pem()
    code, out = invoke({**env, "BACKFARM_COINBASE_KEY_NAME": EC_NAME, "BACKFARM_COINBASE_PRIVATE_KEY": pem}, "check")
    assert code == 2
    assert out.strip().count("\n") == 0
    assert out.startswith("error: Coinbase authentication failed") and "(check key name and key)" in out
    body = _pem_body(pem)
    assert all(body[i : i + 12] not in out for i in range(len(body) - 12))


def test_check_without_or_with_malformed_key(env: dict[str, str]) -> None:
    code, out = invoke(env, "check")
    assert code == 2 and "no Coinbase key configured" in out
    broken = ec_pem().replace("\n", "\\n")[:-60]  # truncated, escaped newlines
    code, out = invoke({**env, "BACKFARM_COINBASE_KEY_NAME": EC_NAME, "BACKFARM_COINBASE_PRIVATE_KEY": broken}, "check")
    assert code == 2 and "truncated" in out
    assert _pem_body(broken.replace("\\n", "\n"))[10:30] not in out


def test_watch_shows_quotes_for_a_duration(env: dict[str, str]) -> None:
    code, out = invoke(env, "watch", "BTC-USD,eth-usd", "--duration", "1s")
    assert code == 0, out
    assert "Coinbase quotes" in out and "BTC-USD" in out and "ETH-USD" in out
    assert "ws ·" in out


def test_watch_unknown_symbol_suggests(env: dict[str, str]) -> None:
    code, out = invoke(env, "watch", "BTC-USDX")
    assert code == 2 and out.strip() == "error: unknown product 'BTC-USDX' (did you mean 'BTC-USD'?)"


def test_watch_when_coinbase_is_unreachable(env: dict[str, str]) -> None:
    code, out = invoke({**env, "BACKFARM_COINBASE_API_URL": f"http://127.0.0.1:{free_port()}"}, "watch", "BTC-USD")
    assert code == 3 and "Coinbase is unreachable" in out


def test_sim_rejects_bad_flags(env: dict[str, str]) -> None:
    code, out = invoke(env, "sim", "--speed", "0")
    assert code == 2 and "--speed must be > 0" in out
    code, out = invoke(env, "sim", "--source", "synthetc")
    assert code == 2 and "did you mean 'synthetic'" in out


def test_sim_runs_in_the_foreground_until_interrupted(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "BACKFARM_DATA_DIR": str(tmp_path),
        "BACKFARM_COINBASE_KEY_NAME": "",
        "BACKFARM_COINBASE_PRIVATE_KEY": "",
        "BACKFARM_COINBASE_KEY_FILE": "",
    }
    cmd = [sys.executable, "-c", "from backfarm.cli import main; main()", "coinbase", "sim", "--port", "0"]
    proc = subprocess.Popen(cmd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    announced = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops it." in line:
                announced.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # Interrupt only once it has said everything: a Ctrl-C in the middle of the announcement cuts it short.
        assert announced.wait(timeout=15), f"simulator did not announce itself: {''.join(lines)}"
        # Port 0: the system picks a free one (a port chosen here could be taken before the simulator binds it).
        found = re.search(r"BACKFARM_COINBASE_API_URL=http://127\.0\.0\.1:(\d+)", "".join(lines))
        assert found and int(found.group(1)) > 0, "".join(lines)
        port = int(found.group(1))
        url = f"http://127.0.0.1:{port}/api/v3/brokerage/time"
        assert requests.get(url, timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        reader.join(timeout=10)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert f"export BACKFARM_COINBASE_API_URL=http://127.0.0.1:{port}" in out
    assert f"export BACKFARM_COINBASE_WS_URL=ws://127.0.0.1:{port}/ws" in out
