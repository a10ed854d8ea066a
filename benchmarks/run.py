"""The benchmark behind ``make bench``: ``backfarm bench`` with every part switched on.

The measurements live in :mod:`backfarm.cli.bench` (``backfarm bench --help``). This wrapper adds the scaling run
(30/90/365 days) and, when ``redis-server`` is installed, the farm run on a private server; any other arguments are
passed through (e.g. ``python benchmarks/run.py --json --repeats 5``).
"""

from __future__ import annotations

import shutil
import sys

from backfarm.cli import app


def main(argv: list[str]) -> int:
    """Run ``backfarm bench`` with the full set of measurements plus ``argv``."""
    args = ["bench", "--days-scaling"]
    if shutil.which("redis-server") and "--no-farm" not in argv:
        args.append("--farm")
    try:
        app(args + argv, prog_name="backfarm")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
