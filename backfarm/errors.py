"""One exception tree for backfarm, split by the reaction each error needs.

::

    BackfarmError                  base; never raised directly
    ├── UserError                  bad input or configuration: one line on stderr, exit 2, nothing enqueued
    │   ├── ConfigError            settings, flags, spec files, unreachable or misconfigured services
    │   ├── ValidationError        unknown strategy/symbol/parameter/granularity/window, broken parameter rule
    │   ├── DataError              candles missing, too many gaps, a bad import file
    │   ├── AuthError              credentials rejected or missing permission
    │   └── NoSpace                the disk is full (or read-only): nothing partly written is kept
    ├── TemporaryError             may succeed if retried later (rate limits, timeouts, 5xx, lost connections)
    │   ├── RateLimited
    │   ├── ServiceUnavailable
    │   │   └── RedisUnreachable   Redis does not answer (restarting, network): clients and workers wait for it
    │   ├── RedisRefusesWrites     Redis answers but will not write (maxmemory reached, a read-only replica)
    │   └── BadSourceData          a source sent bars that break the bar rules: nothing cached, fetched again later
    └── CorruptCacheError          a cache file failed to read or verify; the cache moves it aside and rebuilds it

Anything that is not a ``BackfarmError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BackfarmError(Exception):
    """Base of every error backfarm raises on purpose."""


class UserError(BackfarmError):
    """The user can fix this: the CLI prints the message on one line and exits with code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A setting, flag, spec file or service address is wrong or unusable."""


class ValidationError(UserError):
    """A sweep or session names something unknown or breaks a parameter rule."""


class DataError(UserError):
    """Candles are missing, have too many gaps, or an import file is malformed."""


class AuthError(UserError):
    """Credentials were rejected, are malformed, or lack a permission."""


class NoSpace(UserError):
    """A write met a full (or read-only) file system; what was being written is not kept, so the same command
    completes once there is space."""


class TemporaryError(BackfarmError):
    """A transient failure; retrying later may succeed."""

    exit_code = 3


class RateLimited(TemporaryError):
    """A rate limit was hit."""


class ServiceUnavailable(TemporaryError):
    """A remote service could not be reached or answered with a server error."""


class RedisUnreachable(ServiceUnavailable):
    """Redis does not answer (restarting, out of the network): waiting for it is the remedy."""


class RedisRefusesWrites(TemporaryError):
    """Redis answers but refuses to write (``OOM`` with ``maxmemory`` reached under ``noeviction``, ``READONLY`` on a
    replica after a failover, ``MISCONF`` when it cannot save): nothing was written; it works again once the cause is
    fixed, and the work is retried then."""


class BadSourceData(TemporaryError):
    """A candle source sent bars that break the bar rules (:mod:`backfarm.candles.checks`), off the bar grid, or
    two different bars for one time: none of that month was cached, so a later fetch tries again."""


class CorruptCacheError(BackfarmError):
    """A cached file could not be read or failed verification."""


def did_you_mean(kind: str, value: str, choices: Iterable[str]) -> str:
    """Return ``unknown {kind} '{value}'`` plus a close match from ``choices`` when there is one."""
    options = sorted(choices)
    close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
    if close:
        return f"unknown {kind} '{value}' (did you mean '{close[0]}'?)"
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f"unknown {kind} '{value}' (choose from: {shown})"
