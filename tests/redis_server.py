"""A private ``redis-server`` for tests: its own free port and directory, killable and restartable.

Never touches the default port 6379. The server dies with the test process (``PR_SET_PDEATHSIG`` on Linux) and is
stopped by :meth:`RedisServer.close` / the context manager; its directory is removed unless the caller owns it.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

INSTALL_HINT = "redis-server not found on PATH; install it with: apt-get install redis-server"
DEFAULT_PORT = 6379
START_TIMEOUT_S = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (never 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != DEFAULT_PORT:
            return int(port)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL the server when the test process exits, however it exits."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class RedisServer:
    """One ``redis-server`` subprocess on ``127.0.0.1``.

    ``appendonly=True`` turns on the AOF (``appendfsync`` as given, ``always`` loses nothing on ``kill -9``), so data
    survives :meth:`kill` + :meth:`restart`; otherwise the server keeps nothing on disk (``--save ''``).
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        password: str | None = None,
        directory: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError(INSTALL_HINT)
        if port == DEFAULT_PORT:
            raise ValueError("tests must never use Redis' default port 6379")
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password
        self._own_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix="backfarm-redis-")) if directory is None else Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fixed_port = port
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:{port}/0``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.dir / "redis.log"

    def client(self) -> redis.Redis:
        """A new client on this server (``decode_responses=True``)."""
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=10)

    def _command(self) -> list[str]:
        assert self.binary is not None
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        cmd += ["--save", "", "--daemonize", "no", "--logfile", str(self.log), "--dbfilename", "dump.rdb"]
        cmd += ["--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync]
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd

    def start(self) -> RedisServer:
        """Start the server and wait until it answers; a port taken meanwhile is swapped for another one."""
        for _ in range(5):
            if self._spawn():
                return self
            if self._fixed_port is not None:
                break
            self.port = free_port()
        raise RuntimeError(f"redis-server did not start on port {self.port}; log: {self._log_tail()}")

    def _spawn(self) -> bool:
        """One start attempt: True once the server answers PING, False if the process exited first."""
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        proc = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=preexec)  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        probe = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1)
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return False
                try:
                    # The process id check rules out another server that grabbed the port in the meantime.
                    if probe.ping() and probe.info("server")["process_id"] == proc.pid:
                        self.proc = proc
                        return True
                except redis.BusyLoadingError:
                    pass  # still replaying the AOF
                except redis.ConnectionError:
                    pass
                time.sleep(0.02)  # polling for readiness, not timing a test
        finally:
            probe.close()
        proc.kill()
        proc.wait()
        raise RuntimeError(f"redis-server on port {self.port} did not answer in {START_TIMEOUT_S:.0f} s")

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log.read_text().strip().splitlines()[-3:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop gracefully (SIGTERM) and wait."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None

    def kill(self) -> None:
        """Kill hard (SIGKILL): no shutdown save, exactly what a crash leaves behind."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> RedisServer:
        """Start again on the same port and directory (AOF data survives with ``appendonly``)."""
        self.stop()
        if not self._spawn():
            raise RuntimeError(f"redis-server did not restart on port {self.port}; log: {self._log_tail()}")
        return self

    def close(self) -> None:
        """Stop the server and remove the directory if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
