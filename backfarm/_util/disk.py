"""Writes that meet a full disk: one error that says so, whichever writer met it (candle cache, result parts, the
SQLite index, an export), so the command prints one line and nothing half-written is kept."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backfarm.errors import NoSpace

FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
"""The errors of a file system that cannot take the write: no space left, quota exceeded, mounted read-only, or a
file size limit reached (``ulimit -f``)."""


_REASONS = {errno.EROFS: "is read-only", errno.EFBIG: "takes no file this large (a file size limit)"}


def no_space(exc: BaseException, where: Path | str) -> NoSpace | None:
    """The :class:`NoSpace` error for ``exc`` met while writing ``where``, or ``None`` when it is something else."""
    if isinstance(exc, OSError) and exc.errno in FULL:
        reason = _REASONS.get(exc.errno, "is full")
    elif isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
        reason = "is full"
    elif isinstance(exc, OSError) and exc.errno is None and "No space left on device" in str(exc):  # from Arrow
        reason = "is full"
    elif isinstance(exc, OSError) and exc.errno is None and "File too large" in str(exc):  # from Arrow
        reason = _REASONS[errno.EFBIG]
    else:
        return None
    return NoSpace(
        f"cannot write {where}: the disk {reason}; nothing partly written was kept: free space and run the command "
        "again"
    )


@contextmanager
def writing(where: Path | str) -> Iterator[None]:
    """Turn a full (or read-only) disk met inside the block into :class:`NoSpace`; other errors pass unchanged."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        full = no_space(exc, where)
        if full is None:
            raise
        raise full from None
