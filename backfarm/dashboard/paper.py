"""Live paper sessions for the dashboard: status and progress, each account's equity and P&L, equity marks.

Read from the paper session store (:mod:`backfarm.paper.store`: Redis on the farm, ``paper.sqlite`` in the
data directory otherwise) — the same state ``backfarm paper status`` shows, checkpointed after every bar. The
embedded file is opened only once it exists, so a dashboard never creates one.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np

from backfarm._util.time import NS_PER_SECOND
from backfarm.config import Settings
from backfarm.core.results import ResultRecord
from backfarm.engine.artifacts import EXIT_REASONS, equity_artifact, table_artifact
from backfarm.engine.downsample import downsample_minmax
from backfarm.engine.kernel import TRADE_COLUMNS
from backfarm.paper.accounts import RoundTrip
from backfarm.paper.report import account_rows, equity_marks
from backfarm.paper.store import open_session_store
from backfarm.paper.store.base import SESSION_FILE, SessionInfo, SessionStore

MAX_SESSIONS = 20
"""Sessions listed (newest first)."""
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
                if self.settings.redis_url or (self.settings.data_dir / SESSION_FILE).exists():
                    self._store = open_session_store(self.settings)
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
    """Per account (:func:`backfarm.paper.report.account_rows`), with non-finite money values as JSON nulls."""
    return [
        {**row, "equity": _finite(row["equity"]), "pnl": _finite(row["pnl"]), "return": _finite(row["return"])}
        for row in account_rows(info, now)
    ]


def session(info: SessionInfo, now: float) -> dict[str, Any]:
    """One session: identity, status, progress in bars, and its accounts."""
    spec, cursor = info.spec, info.cursor or {}
    return {
        "session_id": info.session_id,
        "status": info.display_status,
        "active": info.status in ("queued", "running"),
        "feed": spec.feed,
        "speed": ("max" if spec.speed is None else spec.speed) if spec.replay else None,
        "granularity": spec.granularity,
        "strategies": [name for name, _ in spec.strategies],
        "symbols": list(spec.symbols),
        "capital": spec.capital,
        "bars_done": info.bars_done,
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
    newest = (store.get(sid) for sid in store.session_ids()[:limit])  # not every session: only the ones listed
    return [session(info, now) for info in newest if info is not None]


def _marks(store: SessionStore, info: SessionInfo) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return equity_marks(info.spec, store.equity(info.session_id))


def curves(store: SessionStore | None, session_id: str) -> dict[str, Any] | None:
    """Each account's equity so far (at most 500 points, time = bar close in epoch s); ``None`` if unknown."""
    info = store.get(session_id) if store is not None else None
    if store is None or info is None:
        return None
    dt = info.spec.bar_seconds
    out = []
    for key, (_, ts, equity) in _marks(store, info).items():
        keep = downsample_minmax(equity)
        out.append({"account": key, "ts": (ts[keep] // NS_PER_SECOND + dt).tolist(), "equity": equity[keep].tolist()})
    return {"session_id": session_id, "status": info.status, "capital": info.spec.capital, "curves": out}


def record_extra(store: SessionStore | None, record: ResultRecord) -> dict[str, Any] | None:
    """The equity artifact of a paper result, rebuilt from its session's equity marks (``None`` if unavailable)."""
    session_id = record.extra.get("session")
    if store is None or not isinstance(session_id, str):
        return None
    info = store.get(session_id)
    marks = _marks(store, info).get(f"{record.strategy}@{record.symbol}") if info is not None else None
    if info is None or marks is None:
        return None
    bars, ts, equity = marks
    t0 = int(ts[0] // NS_PER_SECOND) - int(bars[0]) * info.spec.bar_seconds
    key = f"{record.strategy}@{record.symbol}"
    trips = [t for t in store.trades(session_id) if t.account == key]
    return {
        "equity": equity_artifact(equity, t0, info.spec.bar_seconds, bars=bars),
        "trades": table_artifact(_trades(trips)),
    }


def _trades(trips: list[RoundTrip]) -> np.ndarray:
    """A session's round trips of one account as the engine's float trade table (columns ``TRADE_COLUMNS``)."""
    return np.array(
        [
            [t.entry_bar, t.exit_bar, t.entry_price, t.exit_price, t.qty, t.pnl, t.ret, _REASON.get(t.exit_reason, 0)]
            for t in trips
        ],
        dtype=np.float64,
    ).reshape(len(trips), len(TRADE_COLUMNS))
