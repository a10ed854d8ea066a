"""Live paper sessions for the dashboard: status and progress, each account's equity and P&L, equity marks.

Read from the paper session store (:mod:`backfarm.paper.checkpoint`: Redis on the farm, ``paper.sqlite`` in the
data directory otherwise) — the same state ``backfarm paper status`` shows, checkpointed after every bar. The
embedded file is opened only once it exists, so a dashboard never creates one.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np

from backfarm.config import Settings
from backfarm.engine.backtest import Trades
from backfarm.engine.kernel import TRADE_COLUMNS
from backfarm.leaderboard.model import ResultRecord
from backfarm.paper.accounts import RoundTrip, state_fields
from backfarm.paper.checkpoint import RedisSessionStore, SessionInfo, SessionStore, SQLiteSessionStore
from backfarm.paper.report import equity_now
from backfarm.tasks.artifacts import EXIT_REASONS, downsample_minmax, equity_artifact, trades_artifact

MAX_SESSIONS = 20
"""Sessions listed (newest first)."""
NS = 1_000_000_000
_REASON = {name: code for code, name in enumerate(EXIT_REASONS)}


class PaperSessions:
    """The session store of ``settings``, opened lazily (the embedded file may appear after the dashboard starts)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: SessionStore | None = None
        self._lock = threading.Lock()

    def store(self) -> SessionStore | None:
        """The open store, or ``None`` while no session was ever started here (embedded path)."""
        with self._lock:
            if self._store is None:
                if self.settings.redis_url:
                    self._store = RedisSessionStore(self.settings.redis_url)
                elif (path := self.settings.data_dir / "paper.sqlite").exists():
                    self._store = SQLiteSessionStore(path)
            return self._store

    def close(self) -> None:
        """Close the store if it was opened."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def accounts(info: SessionInfo, now: float) -> list[dict[str, Any]]:
    """Per account: equity at the latest price, P&L, return, trades, position and the age of its last quote."""
    cursor, capital, rows = info.cursor or {}, info.spec.capital, []
    for account in info.spec.accounts():
        fields = state_fields(info.accounts.get(account.key), capital)
        equity = equity_now(info, account.symbol, fields)
        quote = cursor.get("quotes", {}).get(account.symbol)
        rows.append(
            {
                "account": account.key,
                "strategy": account.strategy,
                "params": account.params,
                "symbol": account.symbol,
                "equity": _finite(equity),
                "pnl": _finite(equity - capital),
                "return": _finite(equity / capital - 1.0),
                "trades": int(fields["trades"]),
                "position": fields["qty"],
                "quote_age_s": now - quote["received"] if quote and "received" in quote else None,
            }
        )
    return rows


def session(info: SessionInfo, now: float) -> dict[str, Any]:
    """One session: identity, status, progress in bars, and its accounts."""
    spec, cursor = info.spec, info.cursor or {}
    done = cursor.get("bars_done") or {}
    return {
        "session_id": info.session_id,
        "status": "orphaned" if info.orphaned else info.status,
        "active": info.status in ("queued", "running"),
        "feed": spec.feed,
        "speed": ("max" if spec.speed is None else spec.speed) if spec.replay else None,
        "granularity": spec.granularity,
        "strategies": [name for name, _ in spec.strategies],
        "symbols": list(spec.symbols),
        "capital": spec.capital,
        "bars_done": min((int(v) for v in done.values()), default=0),
        "window_bars": spec.window_bars,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "resumes": info.resumes,
        "error": info.error,
        "warnings": cursor.get("warnings", {}),
        "accounts": accounts(info, now),
    }


def sessions(store: SessionStore | None, limit: int = MAX_SESSIONS) -> list[dict[str, Any]]:
    """The newest ``limit`` sessions (``[]`` without a session store)."""
    if store is None:
        return []
    now = time.time()
    return [session(info, now) for info in store.sessions()[:limit]]


def _marks(store: SessionStore, info: SessionInfo) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per account key: (bar, bar open time in ns, equity at that bar's close) from the session's equity marks."""
    spec = info.spec
    by_symbol: dict[int, list[list[Any]]] = {}
    for row in store.equity(info.session_id):
        by_symbol.setdefault(int(row[0]), []).append(row)
    out = {}
    names = [name for name, _ in spec.strategies]
    for index, symbol in enumerate(spec.symbols):
        rows = by_symbol.get(index)
        if not rows:
            continue
        bars = np.array([r[1] for r in rows], dtype=np.int64)
        ts = np.array([r[2] for r in rows], dtype=np.int64)
        for k, name in enumerate(names):
            out[f"{name}@{symbol}"] = (bars, ts, np.array([r[3 + k] for r in rows], dtype=np.float64))
    return out


def curves(store: SessionStore | None, session_id: str) -> dict[str, Any] | None:
    """Each account's equity so far (at most 500 points, time = bar close in epoch s); ``None`` if unknown."""
    info = store.get(session_id) if store is not None else None
    if store is None or info is None:
        return None
    dt = info.spec.bar_seconds
    out = []
    for key, (_, ts, equity) in _marks(store, info).items():
        keep = downsample_minmax(equity)
        out.append({"account": key, "ts": (ts[keep] // NS + dt).tolist(), "equity": equity[keep].tolist()})
    return {"session_id": session_id, "status": info.status, "capital": info.spec.capital, "curves": out}


def record_extra(store: SessionStore | None, record: ResultRecord) -> dict[str, Any] | None:
    """The equity artifact of a paper result, rebuilt from its session's equity marks (``None`` if unavailable)."""
    session_id = record.extra.get("session") or record.extra.get("session_id")
    if store is None or not isinstance(session_id, str):
        return None
    info = store.get(session_id)
    marks = _marks(store, info).get(f"{record.strategy}@{record.symbol}") if info is not None else None
    if info is None or marks is None:
        return None
    bars, ts, equity = marks
    t0 = int(ts[0] // NS) - int(bars[0]) * info.spec.bar_seconds
    key = f"{record.strategy}@{record.symbol}"
    trips = [t for t in store.trades(session_id) if t.account == key]
    return {
        "equity": equity_artifact(equity, t0, info.spec.bar_seconds, bars=bars),
        "trades": trades_artifact(_trades(trips)),
    }


def _trades(trips: list[RoundTrip]) -> Trades:
    """A session's round trips of one account as the engine's :class:`Trades` columns."""
    table = np.array(
        [
            [t.entry_bar, t.exit_bar, t.entry_price, t.exit_price, t.qty, t.pnl, t.ret, _REASON.get(t.exit_reason, 0)]
            for t in trips
        ],
        dtype=np.float64,
    ).reshape(len(trips), len(TRADE_COLUMNS))
    return Trades.from_table(table)
