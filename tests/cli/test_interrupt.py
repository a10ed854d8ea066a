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


# Long windows (a year of 1-minute bars): the sweep runs for seconds after its first commit, so a signal lands in the
# middle of it (commits come every second or every 2,000 results).
CMD = [sys.executable, "-m", "backfarm", "backtest", "--source", "synthetic", "--grid", "--days", "365",
       "--workers", "2", "--top", "0"]  # fmt: skip


def _sweep_under_way(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """The 1,285-job sweep of :data:`CMD` in its own process, once it has stored 50 results; and its environment."""
    env = {**os.environ, "BACKFARM_DATA_DIR": str(tmp_path), "BACKFARM_REDIS_URL": ""}
    proc = subprocess.Popen(CMD, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _stored(tmp_path / "results" / "index.sqlite") < 50 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    return proc, env


def _stop(proc: subprocess.Popen[str], tmp_path: Path, sig: int, code: int) -> tuple[str, int]:
    """Send ``sig`` to a sweep under way; it must exit ``code`` without a traceback, some but not all results kept.
    Returns its stderr and how many results are stored."""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    kept = _stored(tmp_path / "results" / "index.sqlite")
    assert 0 < kept < 1285
    assert "Traceback" not in err
    return err, kept


def test_interrupt_keeps_results_and_rerun_finishes(tmp_path: Path) -> None:
    proc, env = _sweep_under_way(tmp_path)
    err, kept = _stop(proc, tmp_path, signal.SIGINT, 130)
    assert f"interrupted: {kept:,} of 1,285 jobs are stored" in err
    rerun = subprocess.run(CMD, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"1,285 jobs ({1285 - kept:,} computed, {kept:,} reused)" in rerun.stdout


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_a_sweep_as_ctrl_c_does_and_leaves_no_process(tmp_path: Path) -> None:
    """`kill` (SIGTERM) mid-sweep: what is done stays stored, the command says so and exits 143, and the pool
    processes are stopped with it, not left running."""
    proc, _ = _sweep_under_way(tmp_path)
    mine = (Path("/proc") / str(proc.pid) / "cmdline").read_bytes()
    pool = [pid for pid in _children(proc.pid) if (Path("/proc") / str(pid) / "cmdline").read_bytes() == mine]
    assert pool, "the sweep runs a pool process (a fork: the same command line) beside the parent"
    err, kept = _stop(proc, tmp_path, signal.SIGTERM, 143)
    assert f"terminated: {kept:,} of 1,285 jobs are stored; run the same command again to finish" in err
    assert not [pid for pid in pool if _alive(pid)]  # stopped and reaped before the command returned
