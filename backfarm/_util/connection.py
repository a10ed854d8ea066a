"""One way to talk to Redis: a client with timeouts and a short retry, and its failures as backfarm's errors.

The result store, the farm's ledger and the paper session store all connect through :class:`RedisConnection`, so an
unreachable Redis is a :class:`~backfarm.errors.ServiceUnavailable` (temporary, exit 3), rejected credentials an
:class:`~backfarm.errors.AuthError` and a certificate that does not verify a :class:`~backfarm.errors.ConfigError`
(both exit 2) wherever they happen, and no message ever shows the password.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from backfarm.config import redact_url
from backfarm.errors import AuthError, ConfigError, RedisRefusesWrites, RedisUnreachable

REFUSED_WRITES = ("OOM", "READONLY", "MISCONF")
"""How Redis starts the error of a write it refuses: memory full under ``noeviction``, a read-only replica, a server
that cannot persist."""


def refusal(exc: Exception) -> str | None:
    """The Redis error code of a refused write (redis-py turns OOM and READONLY into classes and drops the code from
    the text), or ``None``."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "OOM"
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "READONLY"
    text = str(exc)
    return next((code for code in REFUSED_WRITES if text.startswith(code)), None)


def refused_writes(where: str, detail: str) -> RedisRefusesWrites:
    """The one-line error for a write Redis refused, naming the cause and its fix."""
    if detail.startswith("OOM"):
        fix = "its maxmemory is reached: raise it (REDIS_MAXMEMORY) or free memory"
    elif detail.startswith("READONLY"):
        fix = "it is a read-only replica: point BACKFARM_REDIS_URL at the primary"
    else:
        fix = "it cannot save to disk: check its disk and logs"
    return RedisRefusesWrites(f"Redis at {where} refuses writes ({detail.split(chr(10))[0][:160]}): {fix}")


T = TypeVar("T")


class _Retry(Retry):
    """redis-py's retry policy minus retrying rejected credentials (they are a ConnectionError subclass)."""

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        def retryable(error: Exception) -> bool:
            if isinstance(error, redis.AuthenticationError):
                return False
            return is_retryable is None or is_retryable(error)

        return super().call_with_retry(do, fail, retryable, with_failure_count)


class RedisConnection:
    """A client (``decode_responses=True``) for ``url`` and the mapping of its failures to backfarm's errors.

    ``retries`` quick retries ride out a blip; a longer outage surfaces as :class:`ServiceUnavailable`. Nothing is
    sent until the first command (:meth:`ping` fails fast with a one-line reason).
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        health_check_interval: int = 15,
        retries: int = 2,
    ) -> None:
        self.url = url
        self.safe_url = redact_url(url) or ""
        self.password: str | None = None
        backoff = ExponentialBackoff(cap=1.0, base=0.1) if retries else NoBackoff()
        self._options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "health_check_interval": health_check_interval,
            "retry": _Retry(backoff, retries=retries),
        }
        try:
            self.client: redis.Redis = redis.Redis.from_url(url, decode_responses=True, **self._options)
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL {self.safe_url}: {self.scrub(exc)}") from None
        self.password = self.client.connection_pool.connection_kwargs.get("password")
        self._raw: redis.Redis | None = None

    @property
    def raw(self) -> redis.Redis:
        """A client on the same server that hands replies back as bytes (for binary values); opened on first use."""
        if self._raw is None:
            self._raw = redis.Redis.from_url(self.url, decode_responses=False, **self._options)
        return self._raw

    def __repr__(self) -> str:
        return f"RedisConnection({self.safe_url!r})"

    @classmethod
    def of(cls, conn: RedisConnection | str) -> tuple[RedisConnection, bool]:
        """A store's connection: ``conn`` itself (shared, its owner closes it) or one opened on the URL ``conn`` (the
        caller closes it), checked with a PING either way so a store fails fast with a one-line reason; the
        connection and whether the caller owns it."""
        owned = isinstance(conn, str)
        made = cls(conn) if isinstance(conn, str) else conn
        try:
            made.ping()
        except Exception:
            if owned:
                made.close()
            raise
        return made, owned

    def scrub(self, exc: BaseException) -> str:
        """An exception's message on one line, with the URL and its password masked should they appear."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        text = text.replace(self.url, self.safe_url)
        return text.replace(self.password, "***") if self.password else text

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn connection and authentication failures inside the block into one-line backfarm errors."""
        try:
            yield
        except (redis.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError) as exc:
            raise self._auth_error(exc) from None
        except redis.exceptions.NoPermissionError as exc:
            raise AuthError(f"Redis at {self.safe_url} denied a command: {self.scrub(exc)}") from None
        except redis.ResponseError as exc:
            if str(exc).startswith(("NOAUTH", "WRONGPASS")):
                raise self._auth_error(exc) from None
            refused = refusal(exc)
            if refused is not None:
                raise refused_writes(self.safe_url, refused + " " + self.scrub(exc)) from None
            raise
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if _rejected_certificate(exc):  # reached, and refused to be trusted: waiting will not fix that
                raise ConfigError(f"Redis at {self.safe_url} failed TLS verification: {self.scrub(exc)}") from None
            raise RedisUnreachable(f"cannot reach Redis at {self.safe_url}: {self.scrub(exc)}") from None

    def _auth_error(self, exc: BaseException) -> AuthError:
        if not self.password:
            return AuthError(
                f"Redis at {self.safe_url} requires a password: give it in the URL, redis://:PASSWORD@host:port/0"
            )
        return AuthError(
            f"Redis at {self.safe_url} rejected the credentials ({self.scrub(exc)}); check BACKFARM_REDIS_URL"
        )

    def ping(self) -> float:
        """Round-trip time in seconds; :class:`ServiceUnavailable`, :class:`AuthError` (or, when Redis answers
        PING with an error, :class:`ConfigError`) when Redis cannot be used."""
        start = time.perf_counter()
        try:
            with self.guard():
                self.client.ping()
        except redis.ResponseError as exc:
            raise ConfigError(f"Redis at {self.safe_url} refused PING: {self.scrub(exc)}") from None
        return time.perf_counter() - start

    def close(self) -> None:
        """Close the connection pools."""
        self.client.close()
        if self._raw is not None:
            self._raw.close()

    def __enter__(self) -> RedisConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rejected_certificate(exc: BaseException) -> bool:
    """Whether a connection failed because a TLS certificate did not verify (ours or the server's)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def check_redis(url: str, timeout_s: float = 3.0) -> None:
    """One quick PING without retries, so a wrong URL fails in seconds rather than after redis-py's and Celery's
    retries: :class:`ServiceUnavailable` when unreachable, :class:`AuthError` for credentials."""
    with RedisConnection(url, socket_timeout=timeout_s, connect_timeout=timeout_s, retries=0) as conn:
        conn.ping()
