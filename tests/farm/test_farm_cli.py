"""The farm's command line: bad Redis URLs and passwords, Flower's login, and the compose file's commands."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from backfarm.cli import app as cli_app
from backfarm.config import Settings
from backfarm.farm.app import SOFT_SHUTDOWN_S, check_time_limits
from backfarm.farm.keys import QUEUES
from tests.redis_server import free_port
from tests.workers import ROOT, wait_for

runner = CliRunner()


def run(env: dict[str, str], *args: str, timeout: float = 30) -> tuple[int, str, str, float]:
    """``python -m backfarm ARGS`` in a fresh process: exit code, stdout, stderr, seconds."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "backfarm", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


NO_RETRY_LOOP_S = 15
"""Far more than a failing command takes (about 2 s idle, mostly imports), far less than the ~30 s that retrying an
unreachable or refusing Redis would take: these bounds catch a retry loop, not a slow machine."""


def test_an_unreachable_redis_is_one_line_and_exit_3_without_retrying(farm_env: dict[str, str]) -> None:
    """Unreachable is temporary (exit 3), as everywhere; the message says what to fix if it is not."""
    code, out, err, seconds = run(farm_env, "--redis", "redis://127.0.0.1:1", "backtest", "--source", "synthetic")
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: cannot reach Redis at redis://127.0.0.1:1")
    assert seconds < NO_RETRY_LOOP_S


def test_a_wrong_password_is_an_auth_error_that_never_shows_it(farm_env: dict[str, str], redis_url: str) -> None:
    wrong = re.sub(r"://:[^@]*@", "://:hunter2-wrong@", redis_url)
    for args in (("backtest", "--source", "synthetic", "--days", "1"), ("worker",), ("status",)):
        code, out, err, seconds = run(farm_env, "--redis", wrong, *args)
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and "rejected the credentials" in err
        assert "hunter2" not in out + err and "redis://:***@127.0.0.1" in err
        assert seconds < NO_RETRY_LOOP_S
    bare = re.sub(r"://:[^@]*@", "://", redis_url)
    code, _, err, _ = run(farm_env, "--redis", bare, "sweep", "reconcile", "abc")
    assert code == 2 and "requires a password" in err


def test_flower_refuses_to_start_without_a_login(farm_env: dict[str, str]) -> None:
    result = runner.invoke(cli_app, ["flower"], env={**farm_env, "BACKFARM_FLOWER_AUTH": ""})
    assert result.exit_code == 2 and "Flower needs a login: set BACKFARM_FLOWER_AUTH=user:password" in result.stderr
    result = runner.invoke(cli_app, ["flower", "--insecure-no-auth", "--address", "0.0.0.0"], env=farm_env)
    assert result.exit_code == 2 and "only listens on 127.0.0.1" in result.stderr
    result = runner.invoke(cli_app, ["flower"], env={**farm_env, "BACKFARM_FLOWER_AUTH": "no-colon"})
    assert result.exit_code == 2 and "user:password" in result.stderr


def _get(url: str, auth: str | None = None, post: bool = False) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=b"{}" if post else None, method="POST" if post else "GET")
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


def _start_flower(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``backfarm flower`` on a free port, listening; another port if that one was taken before Flower bound it."""
    for _ in range(3):
        port = free_port()
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "backfarm", "flower", f"--port={port}"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
            )

        def up(proc: subprocess.Popen[bytes] = proc, port: int = port) -> bool:
            if proc.poll() is not None:
                return True
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        try:
            wait_for(up, 60, "Flower to listen")
        except AssertionError:
            proc.kill()
            proc.wait()
            raise
        if proc.poll() is None:
            return proc, port
        if "already in use" not in log_path.read_text():
            raise AssertionError(f"Flower exited with {proc.returncode}: {log_path.read_text()}")
    raise AssertionError("no free port for Flower in 3 tries")


def test_flower_without_credentials_answers_401(farm_env: dict[str, str], tmp_path: Path) -> None:
    env = {**farm_env, "BACKFARM_FLOWER_AUTH": "admin:flower-s3cret"}
    proc, port = _start_flower(env, tmp_path / "flower.log")
    try:
        base = f"http://127.0.0.1:{port}"
        for path, post in [("/", 0), ("/workers", 0), ("/api/workers", 0), ("/api/task/send-task/x", 1)]:
            status, headers = _get(base + path, post=bool(post))
            assert status == 401, path
            assert headers.get("Access-Control-Allow-Origin") != "*"
        assert _get(base + "/", "admin:wrong")[0] == 401
        assert _get(base + "/", "admin:flower-s3cret")[0] == 200
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"flower-s3cret" not in cmdline  # never on the command line (visible to every user via ps)
    finally:
        proc.kill()
        proc.wait()


# --- docker compose -----------------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{(?P<name>\w+)(?::(?P<op>[-?])(?P<arg>[^}]*))?\}")
SECRETS = {
    "REDIS_PASSWORD": "compose-test-pw",
    "BACKFARM_FLOWER_AUTH": "admin:compose-test",
    "BACKFARM_DASHBOARD_AUTH": "admin:compose-dash",
}


def _interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` / ``${VAR:?error}`` with defaults and two test secrets (``$$`` stays ``$``)."""
    if isinstance(value, str):
        text = _VAR.sub(lambda m: SECRETS.get(m["name"], m["arg"] if m["op"] == "-" else ""), value)
        return text.replace("$$", "$")
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


def _check_command(argv: list[str]) -> Any:
    """Parse ``backfarm COMMAND ...`` with the real CLI (options, their values, arguments), without running it."""
    assert argv[0] == "backfarm" and not argv[1].startswith("-"), argv
    group = typer.main.get_command(cli_app)
    ctx = group.make_context("backfarm", list(argv[1:]))
    command = group.get_command(ctx, argv[1])  # type: ignore[attr-defined]
    assert command is not None, f"no such command: backfarm {argv[1]}"
    command.make_context(argv[1], list(argv[2:]), parent=ctx)  # raises on unknown options or bad values
    return command


def test_the_compose_file_runs_real_backfarm_commands_with_the_tested_settings() -> None:
    yaml = pytest.importorskip("yaml")
    compose = _interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))
    services = compose["services"]
    assert set(services) == {"redis", "worker", "flower", "dashboard", "cli"}
    redis = services["redis"]
    script = " ".join(redis["entrypoint"])
    for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert flag in script
    assert "requirepass $REDIS_PASSWORD" in script and "compose-test-pw" not in script  # only the env var
    assert "ports" not in redis and "healthcheck" in redis and redis["user"] == "redis"
    envs = []
    for name in ("worker", "flower", "dashboard", "cli"):
        service = services[name]
        argv = service["command"] if "entrypoint" not in service else [*service["entrypoint"], *service["command"]]
        command = _check_command(argv)
        assert command.name == {"worker": "worker", "flower": "flower", "dashboard": "dashboard", "cli": "status"}[name]
        env = service["environment"]
        assert env["BACKFARM_REDIS_URL"] == "redis://:compose-test-pw@redis:6379/0"
        settings = Settings.from_env(env)
        check_time_limits(settings)  # soft < hard < visibility, as the workers will check it
        envs.append({k: v for k, v in env.items() if k.startswith("BACKFARM_TASK") or "VISIBILITY" in k})
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "candles:/data" in service["volumes"]
        assert "./examples/strategies:/strategies:ro" in service["volumes"]  # the same strategy files everywhere
        assert env["BACKFARM_STRATEGY_PATH"] == "/strategies"
    assert envs[0] == envs[1] == envs[2] == envs[3]  # the same clocks everywhere
    worker = services["worker"]
    queues = worker["command"][worker["command"].index("--queues") + 1].split(",")
    assert set(queues) <= set(QUEUES)
    assert worker["restart"] == "unless-stopped" and "ports" not in worker
    grace = int(worker["stop_grace_period"].rstrip("s"))
    assert worker["environment"]["REMAP_SIGTERM"] == "SIGQUIT" and grace > SOFT_SHUTDOWN_S + 10
    flower = services["flower"]
    assert all(str(p).startswith("127.0.0.1:") for p in flower["ports"])
    assert flower["environment"]["BACKFARM_FLOWER_AUTH"] == "admin:compose-test"
    dashboard = services["dashboard"]
    assert all(str(p).startswith("127.0.0.1:") for p in dashboard["ports"])  # this machine only, behind auth
    assert dashboard["environment"]["BACKFARM_DASHBOARD_AUTH"] == "admin:compose-dash"
    text = (ROOT / "docker-compose.yml").read_text()
    for path in re.findall(r"\b(docs/[\w./-]+)", text):  # files the comments point to exist
        assert (ROOT / path).exists(), path
    assert "Compose v2" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "data"} <= set(ignored)  # a build after `make demo` does not send the virtualenv
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    example = (ROOT / ".env.example").read_text()
    assert "REDIS_PASSWORD=" in example and "BACKFARM_FLOWER_AUTH=" in example and "BACKFARM_DASHBOARD_AUTH=" in example


def test_worker_rejects_bad_queues_and_clocks(farm_env: dict[str, str]) -> None:
    result = runner.invoke(cli_app, ["worker", "--queues", "backtest,dta"], env=farm_env)
    assert result.exit_code == 2 and "unknown queue 'dta' (did you mean 'data'?)" in result.stderr
    env = {**farm_env, "BACKFARM_TASK_TIME_LIMIT": "30", "BACKFARM_VISIBILITY_TIMEOUT": "20"}
    result = runner.invoke(cli_app, ["worker"], env=env)
    assert result.exit_code == 2 and "must be below BACKFARM_VISIBILITY_TIMEOUT" in result.stderr
    assert os.environ.get("BACKFARM_TASK_TIME_LIMIT") != "30"
