"""The benchmark behind ``make bench``: ``backfarm bench`` with every part switched on.

The measurements live in :mod:`benchmarks.harness` (``backfarm bench --help``). This wrapper adds the scaling run
(30/90/365 days) and, when ``redis-server`` is installed, the farm run on a private server; any other arguments are
passed through (e.g. ``python benchmarks/run.py --json --repeats 5``). It runs the command as a process of its own,
exactly as a user would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys


def main(argv: list[str]) -> int:
    """Run ``backfarm bench`` with the full set of measurements plus ``argv``; its exit code."""
    args = ["bench", "--days-scaling"]
    if shutil.which("redis-server") and "--no-farm" not in argv:
        args.append("--farm")
    return subprocess.run([sys.executable, "-m", "backfarm", *args, *argv], check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
