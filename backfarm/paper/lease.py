"""The lease a runner holds on a session: taken before it runs, renewed in the background, given up at the end.

A lease is a token with a time-to-live in the session store. While a runner renews it (every third of its life) no
other runner can take the session; when the runner dies the lease expires within ``lease_s`` and the next runner
— a redelivered task, or one the paper watchdog enqueued — takes it over and resumes from the checkpoint. Every
commit checks the token (:mod:`backfarm.paper.store`), so a runner that lost its lease cannot write again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from backfarm.errors import TemporaryError, UserError
from backfarm.paper.store.base import DONE, SessionStore

log = logging.getLogger(__name__)


class LeaseBusy(UserError):
    """Another live runner owns the session (a duplicate delivery): nothing to do here."""


def new_token() -> str:
    """``host:pid:random``: unique per runner, and says where the session runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(store: SessionStore, session_id: str, token: str, lease_s: float, wait: bool = True) -> bool:
    """Take the lease, waiting out one left by a dead runner (it expires within ``lease_s``).

    Returns False when the session ended meanwhile; raises :class:`LeaseBusy` when a live runner keeps it.
    """
    deadline = time.monotonic() + (lease_s + 1.0 if wait else 0.0)
    while not store.acquire(session_id, token, lease_s):
        info = store.get(session_id)
        if info is not None and info.status in DONE:
            return False
        if time.monotonic() >= deadline:
            raise LeaseBusy(f"session {session_id} is running elsewhere")
        time.sleep(0.2)  # waiting for another process's lease to expire
    return True


class LeaseKeeper(threading.Thread):
    """Renews the lease every third of its life; sets ``lost`` when it is no longer ours.

    A store that cannot be reached is tried again at the next renewal (the commits are fenced anyway). If the lease
    expired during such an outage, the keeper takes it back when nobody else did and the session still names this
    runner's worker as running: the runner rode the outage out with its state in memory, and nothing of another
    runner can be overwritten (a runner that took over would hold the lease or have marked the session its own).
    """

    def __init__(self, store: SessionStore, session_id: str, token: str, ttl_s: float) -> None:
        super().__init__(name=f"lease-{session_id}", daemon=True)
        self.store, self.session_id, self.token, self.ttl_s = store, session_id, token, ttl_s
        self.lost = threading.Event()
        self._halt = threading.Event()
        self._unreachable = False

    def run(self) -> None:
        while not self._halt.wait(self.ttl_s / 3.0):
            try:
                if not self.store.renew(self.session_id, self.token, self.ttl_s) and not self._reclaim():
                    self.lost.set()
                    return
                self._unreachable = False
            except TemporaryError as exc:  # keep trying: the commits are fenced anyway
                self._unreachable = True
                log.warning("session %s: lease renewal failed: %s", self.session_id, exc)

    def _reclaim(self) -> bool:
        """After an outage: take an expired lease back if the session is still ours (see the class docstring)."""
        if not self._unreachable:
            return False
        info = self.store.get(self.session_id)
        ours = info is not None and info.status == "running" and info.worker == self.token.rsplit(":", 1)[0]
        if ours and self.store.acquire(self.session_id, self.token, self.ttl_s):
            log.warning("session %s: the lease expired while the store was unreachable; taken back", self.session_id)
            return True
        return False

    def stop(self) -> None:
        """Stop renewing (the caller releases the lease)."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5.0)

    def release(self) -> None:
        """Stop renewing and give the lease up (it expires by itself if the store is unreachable)."""
        self.stop()
        try:
            self.store.release(self.session_id, self.token)
        except TemporaryError:
            pass
