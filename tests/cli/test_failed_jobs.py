"""A sweep in which jobs failed says why and exits 4, whether some or all failed; the rest is stored."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN = """
    import numpy as np
    from backfarm import Param, Strategy

    class Fragile(Strategy):
        '''Long always, except that `p` = 2 raises (a bug in a plugin) and `p` = 3 divides by zero.'''

        name = "fragile"
        version = "1"
        params = (Param("p", int, 1, 1, 3, (1, 2, 3)),)

        def exposure(self, ind, p):
            if p["p"] == 2:
                raise ValueError("p = 2 is not supported")
            if p["p"] == 3:
                return np.ones(ind.n) / 0 * 0 + {}["missing"]
            return np.ones(ind.n)
"""


def _plugin(where: Path) -> None:
    """A real (unpacked) distribution declaring the strategy as a backfarm plugin."""
    (where / "fragile_plugin.py").write_text(textwrap.dedent(PLUGIN))
    dist = where / "fragile_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fragile-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[backfarm.strategies]\nfragile = fragile_plugin:Fragile\n")


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BACKFARM_DATA_DIR": str(tmp_path / "data"), "BACKFARM_REDIS_URL": "",
           "PYTHONPATH": str(tmp_path / "plugin")}  # fmt: skip
    cmd = [sys.executable, "-m", "backfarm", "backtest", "--strategies", "fragile", "--symbols", "BTC-USD",
           "--days", "2", "--granularity", "1h", "--source", "synthetic", "--workers", "1", *args]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_failed_jobs_are_explained_and_exit_4(tmp_path: Path) -> None:
    (tmp_path / "plugin").mkdir()
    _plugin(tmp_path / "plugin")
    some = _run(tmp_path, "--grid")
    assert some.returncode == 4, some.stderr
    assert "3 jobs (1 computed, 0 reused, 2 failed)" in some.stdout
    assert "2 jobs failed (marked dead;" in some.stderr
    assert "1 × ValueError: p = 2 is not supported" in some.stderr
    assert "1 × KeyError: 'missing'" in some.stderr
    assert "Traceback" not in some.stderr
    alone = _run(tmp_path, "--params", "fragile:p=2")
    assert alone.returncode == 4, alone.stderr
    assert "no backtest succeeded" in alone.stdout and "1 job failed" in alone.stderr
    fine = _run(tmp_path, "--params", "fragile:p=1")
    assert fine.returncode == 0, fine.stderr
