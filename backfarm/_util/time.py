"""Time helpers: ISO 8601 UTC text and epoch nanoseconds, the two forms every layer passes times in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

NS_PER_SECOND = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(ts: datetime) -> str:
    """``2026-10-24T00:00:00Z`` for an aware UTC datetime."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """Inverse of :func:`iso` (also accepts dates and offsets); naive input is taken as UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def to_ns(dt: datetime) -> int:
    """Nanoseconds since the epoch for a datetime; a naive datetime is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH  # exact integer arithmetic: datetime.timestamp() would round through a float
    return (delta.days * 86400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1000


def from_ns(ns: int) -> datetime:
    """The UTC datetime of an epoch-nanosecond timestamp (sub-microsecond digits are dropped)."""
    return _EPOCH + timedelta(microseconds=int(ns) // 1000)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
