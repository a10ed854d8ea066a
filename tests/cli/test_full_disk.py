"""A write that the file system refuses (here: a file size limit, as a full disk would) is one line and exit 2,
nothing half-written is kept, and the same command completes once there is room."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

SWEEP = ["backtest", "--source", "synthetic", "--days", "30", "--grid", "--symbols", "BTC-USD,ETH-USD", "--top", "0"]


def _limited(limit_bytes: int) -> None:
    """In the child: writes past ``limit_bytes`` fail with EFBIG (instead of killing it with SIGXFSZ)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


def _run(data: Path, *args: str, limit: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BACKFARM_DATA_DIR": str(data), "BACKFARM_REDIS_URL": ""}
    return subprocess.run(
        [sys.executable, "-m", "backfarm", *args], env=env, capture_output=True, text=True, timeout=300,
        preexec_fn=None if limit is None else (lambda: _limited(limit)),
    )  # fmt: skip


def _one_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err  # (no bar on a pipe)
    return err.strip()


def test_candles_that_cannot_be_written(tmp_path: Path) -> None:
    refused = _run(tmp_path, *SWEEP, limit=100_000)  # a month of 1-minute candles takes ~1 MB
    assert refused.returncode == 2, refused.stderr
    line = _one_line(refused.stderr)
    assert "cannot write" in line and "takes no file this large" in line and "run the command again" in line
    assert not list((tmp_path / "candles").rglob("*.parquet")) and not list((tmp_path / "candles").rglob("*.tmp"))
    done = _run(tmp_path, *SWEEP)
    assert done.returncode == 0 and "(514 computed, 0 reused)" in done.stdout, done.stderr


def test_results_that_cannot_be_written(tmp_path: Path) -> None:
    fetched = _run(tmp_path, "data", "fetch", "--source", "synthetic", "--days", "30", "--symbols", "BTC-USD,ETH-USD")
    assert fetched.returncode == 0, fetched.stderr
    refused = _run(tmp_path, *SWEEP, limit=400_000)  # candles are cached; a part file of results is larger
    assert refused.returncode == 2, refused.stderr
    assert f"cannot write {tmp_path / 'results' / 'parts'}: " in _one_line(refused.stderr)
    parts = tmp_path / "results" / "parts"
    assert not list(parts.glob("*.tmp")) and not list(parts.glob(".*.tmp"))  # nothing half-written kept
    done = _run(tmp_path, *SWEEP)
    assert done.returncode == 0, done.stderr
    assert "514 jobs (514 computed, 0 reused)" in done.stdout  # every result stored once, on the rerun
