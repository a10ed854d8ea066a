"""Headless Chromium driven over the DevTools protocol (a websocket), just enough for the dashboard tests.

Uses Debian's ``chromium`` package (never a downloaded browser). When no Chromium is on PATH and the tests run as
root on a Debian-like system, :func:`find_chromium` installs it with apt-get; otherwise the test fails with the
exact command to run — it never skips silently. ``BACKFARM_CHROMIUM`` points at another binary.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL = "apt-get update && apt-get install -y chromium"
START_TIMEOUT_S = 30.0


def find_chromium() -> str:
    """The Chromium binary: ``$BACKFARM_CHROMIUM``, one on PATH, or Debian's package installed now (as root)."""
    given = os.environ.get("BACKFARM_CHROMIUM")
    if given:
        return given
    for name in NAMES:
        if found := shutil.which(name):
            return found
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
            subprocess.run(command, env=env, capture_output=True, timeout=900, check=False)
        if found := shutil.which("chromium"):
            return found
    pytest.fail(
        f"the browser tests need Chromium and it could not be installed; run `{INSTALL}` (as root) "
        "or set BACKFARM_CHROMIUM=/path/to/chromium",
        pytrace=False,
    )


class Browser:
    """One headless Chromium process and a connection to its first page."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1000) -> None:
        self.profile = profile
        args = [
            find_chromium(),
            "--headless=new",
            "--no-sandbox",  # root in a container: the sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--mute-audio",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._next = 0
        self._stack = ExitStack()
        self.events: list[dict[str, Any]] = []
        self.loader: str | None = None
        try:
            self.ws = self._connect()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> ClientConnection:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit code {self.process.poll()})")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        page = next(t for t in targets if t["type"] == "page")
        # Entered through the exit stack: websockets wants its connections used as context managers.
        return self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10))

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call a DevTools method and return its result (events that arrive meanwhile are kept in ``events``)."""
        self._next += 1
        self.ws.send(json.dumps({"id": self._next, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self._next:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})  # type: ignore[no-any-return]
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll until ``expression`` is truthy in the page; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {expression}")
            time.sleep(0.05)

    def navigate(self, url: str) -> None:
        """Open ``url`` and wait for its load event."""
        self.send("Page.enable")
        self.events.clear()
        self.loader = self.send("Page.navigate", url=url).get("loaderId")
        self.wait_for("document.readyState === 'complete'")

    def screenshot(self, path: Path) -> bytes:
        """Save a PNG of the whole page to ``path``; returns its bytes."""
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        data = base64.b64decode(shot["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def requests(self) -> list[str]:
        """URLs of every request the current document made (needs ``Network.enable``).

        Requests are matched to the last navigation by its loader id: the page being left can still fire a poll
        between ``Page.navigate`` and the new document's commit, and that request is not the new page's.
        """
        self.evaluate("1")  # flush pending events into ``events``
        sent = [e["params"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]
        return [p["request"]["url"] for p in sent if self.loader is None or p.get("loaderId") == self.loader]

    def close(self) -> None:
        """Close the connection and stop the browser."""
        self._stack.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
