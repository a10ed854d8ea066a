"""The contract of the paper session stores, and what they hold: a session's spec, status, lease and checkpoints.

Two stores keep it: :class:`~backfarm.paper.store.redis_store.RedisSessionStore` for the farm (sessions run as Celery
tasks and resume on any worker) and :class:`~backfarm.paper.store.sqlite.SQLiteSessionStore` for the embedded path
(a local file in the data directory).

Exactly once. A runner owns a session through a **lease** (a token with a time-to-live it keeps renewing). Every
write of the run — checkpoint, new fills, closed round trips, equity marks, live bars — is one atomic **commit**
that first checks the token, so a runner that lost its lease (it was paused, or presumed dead and replaced) can
never write again. Fills are keyed ``{account}:{bar}:{reason}`` and inserted only if absent, and the lists of
equity marks and bars are cut back to the checkpoint's length before they are appended to, so replaying a commit
changes nothing. A resumed session therefore continues from its last commit and records each fill exactly once.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from backfarm.errors import BackfarmError, ValidationError
from backfarm.paper.accounts import Fill, RoundTrip
from backfarm.paper.spec import SessionSpec

# A session's life: queued → running → finished (its duration ended) | stopped (``paper stop``) | failed.
ACTIVE = frozenset({"queued", "running"})
DONE = frozenset({"finished", "stopped", "failed"})
SESSION_FILE = "paper.sqlite"
"""The embedded session store's file in the data directory."""


class LeaseLost(BackfarmError):
    """Another runner owns the session now: this one must stop without writing anything more."""


@dataclass
class Commit:
    """One atomic write of a running session."""

    cursor: dict[str, Any]
    accounts: dict[str, list[float]] = field(default_factory=dict)
    """Account states that changed since the last commit."""
    fills: list[Fill] = field(default_factory=list)
    trades: list[RoundTrip] = field(default_factory=list)
    equity: list[list[Any]] = field(default_factory=list)
    equity_from: int = 0
    """Index the first equity row goes to (rows beyond it from an uncommitted past are dropped)."""
    bars: list[dict[str, Any]] = field(default_factory=list)
    bars_from: int = 0


@dataclass
class Checkpoint:
    """What a resuming runner reads back."""

    cursor: dict[str, Any]
    accounts: dict[str, list[float]]
    bars: list[dict[str, Any]]


@dataclass
class SessionInfo:
    """A session as ``paper status`` shows it."""

    spec: SessionSpec
    status: str
    created_at: float
    updated_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    worker: str = ""
    resumes: int = 0
    error: str = ""
    cursor: dict[str, Any] | None = None
    accounts: dict[str, list[float]] = field(default_factory=dict)
    lease_alive: bool = False
    stop_requested: bool = False
    final: dict[str, Any] | None = None
    """Each account's metrics, written when the session ended."""

    @property
    def session_id(self) -> str:
        """The session's id."""
        return self.spec.session_id

    @property
    def orphaned(self) -> bool:
        """Running, but nobody holds its lease: its worker died (a paper worker will resume it)."""
        return self.status == "running" and not self.lease_alive

    @property
    def display_status(self) -> str:
        """The status as listed: ``orphaned`` for a running session whose worker died."""
        return "orphaned" if self.orphaned else self.status

    @property
    def bars_done(self) -> int:
        """Bars every symbol has completed (the slowest symbol's count; 0 before the first checkpoint)."""
        done = (self.cursor or {}).get("bars_done") or {}
        return min((int(v) for v in done.values()), default=0)


class SessionStore(ABC):
    """The contract both stores implement (see the module docstring for the guarantees)."""

    @abstractmethod
    def create(self, spec: SessionSpec) -> None:
        """Store a new session as ``queued``."""

    @abstractmethod
    def get(self, session_id: str) -> SessionInfo | None:
        """The session with its status and latest checkpoint cursor, or ``None``."""

    @abstractmethod
    def session_ids(self) -> list[str]:
        """Every session id, newest first."""

    @abstractmethod
    def active_ids(self) -> list[str]:
        """Ids of the sessions still queued or running."""

    @abstractmethod
    def update(self, session_id: str, **fields: Any) -> None:
        """Set meta fields: ``status``, ``worker``, ``error``, ``started_at``, ``finished_at``, ``final``, …"""

    @abstractmethod
    def bump_resumes(self, session_id: str) -> int:
        """Count one more resume; returns the new count."""

    @abstractmethod
    def acquire(self, session_id: str, token: str, ttl_s: float) -> bool:
        """Take the lease if it is free or already ``token``'s; True on success."""

    @abstractmethod
    def renew(self, session_id: str, token: str, ttl_s: float) -> bool:
        """Extend ``token``'s lease; False when it is no longer ``token``'s."""

    @abstractmethod
    def release(self, session_id: str, token: str) -> None:
        """Give the lease up (only if it is still ``token``'s)."""

    @abstractmethod
    def lease_alive(self, session_id: str) -> bool:
        """Someone holds the lease right now."""

    @abstractmethod
    def commit(self, session_id: str, token: str, commit: Commit) -> int:
        """Apply ``commit`` atomically if ``token`` holds the lease (else ``LeaseLost``); returns duplicate fills."""

    @abstractmethod
    def checkpoint(self, session_id: str) -> Checkpoint | None:
        """The last committed state, or ``None`` before the first commit."""

    @abstractmethod
    def fills(self, session_id: str) -> list[Fill]:
        """Every fill, in the order recorded."""

    @abstractmethod
    def trades(self, session_id: str) -> list[RoundTrip]:
        """Every closed round trip, in the order closed."""

    @abstractmethod
    def equity(self, session_id: str) -> list[list[Any]]:
        """Equity rows ``[symbol index, bar, ts, equity of each of the symbol's accounts...]``, in order."""

    @abstractmethod
    def request_stop(self, session_id: str) -> None:
        """Ask the runner to end the session gracefully."""

    @abstractmethod
    def stop_requested(self, session_id: str) -> bool:
        """A stop was requested."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resolve(self, given: str) -> str:
        """A full session id from an id or a unique prefix of one."""
        ids = self.session_ids()
        if given in ids:
            return given
        matches = [sid for sid in ids if sid.startswith(given)] if given else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValidationError(f"session id prefix '{given}' is ambiguous ({', '.join(matches[:5])})")
        raise ValidationError(f"no paper session '{given}' (see `backfarm paper status`)")

    def sessions(self) -> list[SessionInfo]:
        """Every session, newest first."""
        return [info for sid in self.session_ids() if (info := self.get(sid)) is not None]


def encode(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _number(value: float | int) -> str:
    """A number as JSON (``repr`` round-trips floats exactly; JSON spells the non-finite ones out)."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def encode_row(values: list[Any]) -> str:
    """A flat list of numbers as JSON, several times faster than ``json.dumps`` (one per account and bar)."""
    return "[" + ",".join(map(_number, values)) + "]"


def session_info(meta: dict[str, str], state: dict[str, str], lease: bool, stop: bool) -> SessionInfo:
    """A ``SessionInfo`` from the stored strings."""

    def num(name: str) -> float:
        return float(meta.get(name) or 0.0)

    cursor = json.loads(state["cursor"]) if "cursor" in state else None
    accounts = {k: json.loads(v) for k, v in state.items() if k != "cursor"}
    return SessionInfo(
        spec=SessionSpec.from_dict(json.loads(meta["spec"])),
        status=meta.get("status", "queued"),
        created_at=num("created_at"),
        updated_at=num("updated_at"),
        started_at=num("started_at"),
        finished_at=num("finished_at"),
        worker=meta.get("worker", ""),
        resumes=int(num("resumes")),
        error=meta.get("error", ""),
        cursor=cursor,
        accounts=accounts,
        lease_alive=lease,
        stop_requested=stop,
        final=json.loads(meta["final"]) if meta.get("final") else None,
    )
