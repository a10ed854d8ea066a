"""Registered CDP public keys and JWT verification, as Coinbase does it (reference/coinbase-api.md §3.2–3.3).

A token is accepted when its ``kid`` names a registered key, the algorithm matches the key type (ES256 ↔ EC P-256,
EdDSA ↔ Ed25519), the signature verifies, ``sub == kid``, ``iss`` is ``cdp`` (or the older ``coinbase-cloud``),
``nbf ≤ now < exp`` (small skew allowed), the lifetime is at most 120 s, and — for REST — ``uri`` equals
``"<METHOD> <Host header><path>"``. Any failure is just "Unauthorized"; the reason is kept for tests and logs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from backfarm.coinbase.auth import CdpKey, PublicKey

CLOCK_SKEW_S = 10
ISSUERS = ("cdp", "coinbase-cloud")
MAX_LIFETIME_S = 120


@dataclass
class KeyInfo:
    """One registered key: its public half and what it may do."""

    public_key: PublicKey
    permissions: dict[str, Any] = field(default_factory=dict)

    @property
    def algorithm(self) -> str:
        """The JWT algorithm this key signs with."""
        return "ES256" if isinstance(self.public_key, ec.EllipticCurvePublicKey) else "EdDSA"


class Unauthorized(Exception):
    """The token was rejected; ``str(exc)`` says why (never sent to the client)."""


class KeyRegistry:
    """Thread-safe map of key name → :class:`KeyInfo`."""

    def __init__(self) -> None:
        self._keys: dict[str, KeyInfo] = {}
        self._lock = threading.Lock()

    def register(
        self,
        name_or_key: str | CdpKey,
        public_key: PublicKey | None = None,
        *,
        can_view: bool = True,
        can_trade: bool = False,
        can_transfer: bool = False,
    ) -> None:
        """Accept tokens of a key: a ``CdpKey`` (its public half is used) or a name plus a public key."""
        if isinstance(name_or_key, CdpKey):
            name, public_key = name_or_key.name, name_or_key.public_key()
        else:
            name = name_or_key
        if not isinstance(public_key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            raise TypeError("public_key must be an EC P-256 or Ed25519 public key")
        permissions = {
            "can_view": can_view,
            "can_trade": can_trade,
            "can_transfer": can_transfer,
            "portfolio_uuid": "00000000-0000-4000-8000-000000000000",
            "portfolio_type": "DEFAULT",
        }
        with self._lock:
            self._keys[name] = KeyInfo(public_key, permissions)

    def get(self, name: str) -> KeyInfo | None:
        """The registered key called ``name``."""
        with self._lock:
            return self._keys.get(name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def verify(self, token: str, uri: str | None, now: float | None = None) -> str:
        """Check ``token`` and return its key name; ``uri=None`` for WebSocket tokens (no ``uri`` claim needed)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"malformed token: {exc}") from None
        kid = header.get("kid")
        info = self.get(kid) if isinstance(kid, str) else None
        if info is None:
            raise Unauthorized("unknown key")
        if header.get("alg") != info.algorithm:
            raise Unauthorized(f"algorithm {header.get('alg')!r} does not match the key ({info.algorithm})")
        if not header.get("nonce"):
            raise Unauthorized("missing nonce")
        claims = _decode(token, info, now)
        if claims.get("sub") != kid:
            raise Unauthorized("sub does not match kid")
        if claims.get("iss") not in ISSUERS:
            raise Unauthorized(f"bad issuer {claims.get('iss')!r}")
        if int(claims["exp"]) - int(claims["nbf"]) > MAX_LIFETIME_S:
            raise Unauthorized("token lifetime exceeds 120 s")
        if uri is not None and claims.get("uri") != uri:
            raise Unauthorized(f"uri {claims.get('uri')!r} does not match {uri!r}")
        return kid  # type: ignore[return-value]


def _decode(token: str, info: KeyInfo, now: float | None) -> dict[str, Any]:
    # Time claims are checked here (not by PyJWT) so tests can pass their own clock.
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            info.public_key,
            algorithms=[info.algorithm],
            options={
                "require": ["sub", "iss", "nbf", "exp"],
                "verify_aud": False,
                "verify_nbf": False,
                "verify_exp": False,
            },
        )
        nbf, exp = int(claims["nbf"]), int(claims["exp"])
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {type(exc).__name__}") from None
    except (TypeError, ValueError):
        raise Unauthorized("nbf/exp are not integers") from None
    now = time.time() if now is None else now
    if now >= exp + CLOCK_SKEW_S:
        raise Unauthorized("expired")
    if now < nbf - CLOCK_SKEW_S:
        raise Unauthorized("not yet valid")
    return claims
