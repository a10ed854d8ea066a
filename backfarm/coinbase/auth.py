"""CDP API keys and the JWTs Coinbase Advanced Trade expects (reference/coinbase-api.md §3).

A key is a name (``organizations/{org}/apiKeys/{id}``) plus a private key: EC P-256 (SEC1 or PKCS#8 PEM → ES256) or
Ed25519 (PKCS#8 PEM, or the CDP portal's base64 32-byte seed / 64-byte seed‖public blob → EdDSA). Keys come from
``Settings`` (name + PEM with literal ``\\n`` escapes allowed) or a downloaded key file (``name``, ``privateKey``).
They are parsed once into a :class:`CdpKey`, which keeps only the key object: no PEM text, nothing in ``repr``.
Error messages say what is wrong and never quote key material.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from backfarm.config import Settings
from backfarm.errors import AuthError

JWT_LIFETIME_S = 120
"""Tokens live two minutes (``exp = nbf + 120``)."""
JWT_ISSUER = "cdp"

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


@dataclass(frozen=True)
class CdpKey:
    """A parsed CDP API key. ``repr``/``str`` show the name and algorithm only."""

    name: str
    algorithm: str
    """``ES256`` (EC P-256) or ``EdDSA`` (Ed25519)."""
    _private_key: PrivateKey = field(repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.name} ({self.algorithm})"

    def __reduce__(self) -> str | tuple[Any, ...]:
        # Serialising would copy key material into queues or logs: refuse it outright.
        raise TypeError("CdpKey cannot be serialised or copied (it holds a private key)")

    @classmethod
    def from_pem(cls, name: str, private_key: str) -> CdpKey:
        """Parse a key name and private key text (PEM, possibly with literal ``\\n``, or base64 Ed25519)."""
        name = _check_name(name)
        key = _parse_private_key(private_key)
        algorithm = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "EdDSA"
        return cls(name, algorithm, key)

    @classmethod
    def from_file(cls, path: Path) -> CdpKey:
        """Load a downloaded CDP key file: JSON with ``name`` (or ``id``) and ``privateKey``."""
        path = Path(path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise AuthError(f"Coinbase key file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthError(f"Coinbase key file {path} cannot be read ({type(exc).__name__})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            # exc.msg/lineno/colno only; the document itself (the key) is never included.
            raise AuthError(f"Coinbase key file {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise AuthError(f"Coinbase key file {path} must hold a JSON object with 'name' and 'privateKey'")
        name = data.get("name") or data.get("id")
        private_key = data.get("privateKey")
        missing = [k for k, v in (("name", name), ("privateKey", private_key)) if not isinstance(v, str) or not v]
        if missing:
            raise AuthError(f"Coinbase key file {path} has no {' or '.join(repr(m) for m in missing)} string")
        try:
            return cls.from_pem(name, private_key)  # type: ignore[arg-type]
        except AuthError as exc:
            raise AuthError(f"Coinbase key file {path}: {exc}") from None

    @classmethod
    def from_settings(cls, settings: Settings) -> CdpKey | None:
        """The configured key, or ``None`` when none is configured. The key file wins over the variables."""
        if settings.coinbase_key_file is not None:
            return cls.from_file(settings.coinbase_key_file)
        name, private_key = settings.coinbase_key_name, settings.coinbase_private_key
        if name is None and private_key is None:
            return None
        if private_key is None:
            raise AuthError(
                "BACKFARM_COINBASE_KEY_NAME is set but BACKFARM_COINBASE_PRIVATE_KEY is not (or use --key-file)"
            )
        if name is None:
            raise AuthError(
                "BACKFARM_COINBASE_PRIVATE_KEY is set but BACKFARM_COINBASE_KEY_NAME is not (or use --key-file)"
            )
        return cls.from_pem(name, private_key)

    def public_key(self) -> PublicKey:
        """The public half (what a server registers to verify this key's tokens)."""
        return self._private_key.public_key()

    def jwt(self, uri: str | None = None, *, now: float | None = None) -> str:
        """A fresh signed token; ``uri`` = ``"METHOD host/path"`` for REST, ``None`` for WebSocket."""
        nbf = int(time.time() if now is None else now)
        claims: dict[str, object] = {"sub": self.name, "iss": JWT_ISSUER, "nbf": nbf, "exp": nbf + JWT_LIFETIME_S}
        if uri is not None:
            claims["uri"] = uri
        headers = {"kid": self.name, "nonce": secrets.token_hex(32), "typ": "JWT"}
        return jwt.encode(claims, self._private_key, algorithm=self.algorithm, headers=headers)

    def ws_jwt(self) -> str:
        """A token for WebSocket subscribe messages (no ``uri`` claim)."""
        return self.jwt(None)


def jwt_uri(method: str, url: str) -> str:
    """The ``uri`` claim: ``"GET api.coinbase.com/api/v3/brokerage/accounts"`` (no scheme, no query)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]  # drop any user:password@
    return f"{method.upper()} {host}{parts.path}"


class CdpAuth(requests.auth.AuthBase):
    """``requests`` auth hook: signs every request with a fresh Bearer JWT bound to its method, host and path."""

    def __init__(self, key: CdpKey) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"CdpAuth({self.key.name!r})"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.key.jwt(jwt_uri(request.method or "GET", request.url or ""))
        request.headers["Authorization"] = f"Bearer {token}"
        return request


def _check_name(name: str) -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise AuthError("Coinbase key name is empty (expected organizations/{org_id}/apiKeys/{key_id})")
    if any(c.isspace() for c in name):
        raise AuthError("Coinbase key name contains whitespace (expected organizations/{org_id}/apiKeys/{key_id})")
    return name


def _normalise(text: str) -> str:
    """Undo the ways a PEM gets mangled in env vars: literal ``\\n``, CRLF, surrounding quotes and blanks."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text.replace("\\r\\n", "\n").replace("\\n", "\n").replace("\r\n", "\n")


def _parse_private_key(text: str) -> PrivateKey:
    if not isinstance(text, str) or not text.strip():
        raise AuthError("Coinbase private key is empty")
    text = _normalise(text)
    if "-----BEGIN" in text:
        return _parse_pem(text)
    return _parse_ed25519_base64(text)


def _parse_pem(text: str) -> PrivateKey:
    if "PRIVATE KEY-----" not in text.split("\n", 1)[0]:
        raise AuthError("Coinbase private key is a PEM block but not a private key (expected 'BEGIN ... PRIVATE KEY')")
    if "-----END" not in text:
        raise AuthError("Coinbase private key PEM is truncated (no END line)")
    try:
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    except TypeError:
        raise AuthError("Coinbase private key is encrypted; export it without a passphrase") from None
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
        # The library's message can quote parts of the input; replace it with our own.
        raise AuthError("Coinbase private key PEM could not be parsed (corrupted or incomplete base64 body)") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise AuthError(f"Coinbase EC key uses curve {key.curve.name}; CDP keys must be P-256 (secp256r1)")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise AuthError(f"Coinbase private key is {type(key).__name__.removeprefix('_')}; expected EC P-256 or Ed25519")


def _parse_ed25519_base64(text: str) -> PrivateKey:
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise AuthError(
            "Coinbase private key is neither a PEM block nor base64 (expected an EC or Ed25519 key)"
        ) from None
    if len(raw) not in (32, 64):
        raise AuthError(
            f"Coinbase private key decodes to {len(raw)} bytes; an Ed25519 key is 32 (seed) or 64 (seed + public)"
        )
    key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64:
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if public != raw[32:]:
            raise AuthError("Coinbase Ed25519 key is inconsistent: its public half does not match its seed")
    return key
