"""Paper replay benchmark: 30 days of 1-minute bars, 5 strategies × 3 symbols, at ``--speed max``.

Prints the multiple of real time (30 days of market time / wall-clock seconds; the floor is 20,000×, i.e. at most
130 s) for the embedded session store (SQLite) and, with ``--redis URL``, for the farm's (Redis), every bar and fill
checkpointed as in production. The replay is checked against the engine on the way: every account's final equity
must equal ``run_backtest`` over the same window.

Run with ``python benchmarks/paper_replay.py [--days 30] [--redis redis://...] [--json]``. Uses a private temporary
data directory and synthetic candles (generated and cached before the clock starts), so it needs no network.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from backfarm.candles.load import load_candles
from backfarm.config import Settings
from backfarm.core.candles import bars_per_year
from backfarm.engine.backtest import run_backtest
from backfarm.execution.runner import warm_up
from backfarm.paper.session import run_session
from backfarm.paper.spec import SessionSpec, build_spec
from backfarm.paper.store.base import SessionStore
from backfarm.paper.store.redis_store import RedisSessionStore
from backfarm.paper.store.sqlite import SQLiteSessionStore
from backfarm.results.embedded import EmbeddedStore
from backfarm.strategies.indicators import Indicators
from backfarm.strategies.registry import get_strategy

STRATEGIES = ("momentum", "mean_reversion", "breakout", "ma_crossover", "volatility")
SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD")
FLOOR = 20_000.0


def _window(days: int) -> tuple[datetime, datetime]:
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    return end - timedelta(days=days), end


def _expected(settings: Settings, spec: SessionSpec, start: datetime, end: datetime) -> dict[str, float]:
    """Final equity of every account according to the engine (same window, same costs)."""
    out = {}
    for symbol in spec.symbols:
        candles = load_candles(settings, "synthetic", symbol, "1m", start, end)
        indicators = Indicators(candles)
        for name, params in spec.strategies:
            x = get_strategy(name).exposure(indicators, dict(params))
            result = run_backtest(
                candles.open, candles.high, candles.low, candles.close, x, spec.costs, spec.capital, bars_per_year(60)
            )
            out[f"{name}@{symbol}"] = result.final_equity
    return out


def bench(settings: Settings, store: SessionStore, days: int, label: str) -> dict[str, Any]:
    """One replay at max speed into ``store``; returns wall time, multiple of real time and throughput."""
    start, end = _window(days)
    spec = build_spec(STRATEGIES, SYMBOLS, f"{days}d", feed="replay", source="synthetic", start=start, speed="max")
    store.create(spec)
    results = EmbeddedStore(Path(settings.data_dir) / f"results-{label}")
    t0 = time.perf_counter()
    outcome = run_session(store, spec.session_id, settings, results=results)
    wall = time.perf_counter() - t0
    expected = _expected(settings, spec, start, end)
    exact = all(outcome.final_equity[key] == value for key, value in expected.items())
    bars = outcome.bars
    accounts = len(STRATEGIES) * len(SYMBOLS)
    return {
        "store": label,
        "days": days,
        "bars_per_symbol": bars,
        "accounts": accounts,
        "fills": outcome.fills,
        "wall_s": round(wall, 3),
        "real_time_multiple": round(days * 86400 / wall),
        "account_bars_per_s": round(bars * accounts / wall),
        "meets_floor": days * 86400 / wall >= FLOOR,
        "equals_backtest": exact,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30, help="Days of 1-minute bars to replay (default 30).")
    parser.add_argument("--redis", help="Also measure the Redis session store at this URL (never use a shared one).")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="backfarm-paper-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp))
        warm_up()
        start, end = _window(args.days)
        for symbol in SYMBOLS:  # generate and cache the candles before the clock starts
            load_candles(settings, "synthetic", symbol, "1m", start, end)
        rows.append(bench(settings, SQLiteSessionStore(Path(tmp) / "paper.sqlite"), args.days, "sqlite"))
        if args.redis:
            store = RedisSessionStore(args.redis)
            try:
                rows.append(bench(settings, store, args.days, "redis"))
            finally:
                store.close()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"paper replay, --speed max: {args.days} days of 1m bars, {len(STRATEGIES)} strategies × "
              f"{len(SYMBOLS)} symbols, every bar and fill checkpointed")  # fmt: skip
        for row in rows:
            print(
                f"  {row['store']:>6}: {row['wall_s']:7.2f} s wall = {row['real_time_multiple']:>9,}× real time "
                f"({row['account_bars_per_s']:,} account-bars/s, {row['fills']:,} fills; floor {FLOOR:,.0f}×: "
                f"{'ok' if row['meets_floor'] else 'MISSED'}; equals the backtest: {row['equals_backtest']})"
            )
    return 0 if all(r["meets_floor"] and r["equals_backtest"] for r in rows) else 1


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
