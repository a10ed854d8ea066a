"""Ctrl-C during an embedded sweep keeps every finished result; the same command then computes only the rest."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path


def _stored(path: Path) -> int:
    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("select count(*) from jobs").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_interrupt_keeps_results_and_rerun_finishes(tmp_path: Path) -> None:
    env = {**os.environ, "BACKFARM_DATA_DIR": str(tmp_path), "BACKFARM_REDIS_URL": ""}
    # Long windows (a year of 1-minute bars): the sweep runs for seconds after its first commit, so the interrupt
    # lands in the middle of it (commits come every second or every 2,000 results).
    cmd = [sys.executable, "-m", "backfarm", "backtest", "--source", "synthetic", "--grid", "--days", "365",
           "--workers", "2", "--top", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _stored(tmp_path / "results" / "index.sqlite") < 50 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    kept = _stored(tmp_path / "results" / "index.sqlite")
    assert 0 < kept < 1285
    assert f"interrupted: {kept:,} of 1,285 jobs are stored" in err
    assert "Traceback" not in err
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"1,285 jobs ({1285 - kept:,} computed, {kept:,} reused)" in rerun.stdout
