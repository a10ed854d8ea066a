"""CDP key parsing and JWTs: header and claims verified with the public key, for ES256 and Ed25519 keys."""

from __future__ import annotations

import base64
import copy
import json
import pickle
import time
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from backfarm.coinbase.auth import CdpAuth, CdpKey, jwt_uri
from backfarm.config import Settings
from backfarm.errors import AuthError
from backfarm.simulator.keys import KeyRegistry, Unauthorized
from tests.coinbase.helpers import EC_NAME, ED_NAME, write_key_file

NOW = 1_700_000_000


def _decode(token: str, key: CdpKey) -> tuple[dict, dict]:
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(
        token, key.public_key(), algorithms=[key.algorithm], options={"verify_nbf": False, "verify_exp": False}
    )
    return header, claims


@pytest.mark.parametrize("which", ["ec", "ed"])
def test_rest_jwt_header_and_claims_verify_with_public_key(which: str, ec_key: CdpKey, ed_key: CdpKey) -> None:
    key = ec_key if which == "ec" else ed_key
    token = key.jwt("GET api.coinbase.com/api/v3/brokerage/accounts", now=NOW)
    header, claims = _decode(token, key)
    assert header["alg"] == ("ES256" if which == "ec" else "EdDSA")
    assert header["kid"] == key.name and header["typ"] == "JWT"
    assert len(header["nonce"]) == 64 and int(header["nonce"], 16) >= 0
    assert claims == {
        "sub": key.name,
        "iss": "cdp",
        "nbf": NOW,
        "exp": NOW + 120,
        "uri": "GET api.coinbase.com/api/v3/brokerage/accounts",
    }


def test_es256_signature_is_raw_r_s_not_der(ec_key: CdpKey) -> None:
    signature = ec_key.jwt("GET h/p").split(".")[2]
    assert len(base64.urlsafe_b64decode(signature + "==")) == 64


def test_every_token_is_fresh(ec_key: CdpKey) -> None:
    a, b = ec_key.jwt("GET h/p", now=NOW), ec_key.jwt("GET h/p", now=NOW)
    assert a != b
    assert jwt.get_unverified_header(a)["nonce"] != jwt.get_unverified_header(b)["nonce"]


@pytest.mark.parametrize("which", ["ec", "ed"])
def test_ws_jwt_has_no_uri(which: str, ec_key: CdpKey, ed_key: CdpKey) -> None:
    key = ec_key if which == "ec" else ed_key
    _, claims = _decode(key.ws_jwt(), key)
    assert "uri" not in claims and claims["sub"] == key.name and claims["exp"] - claims["nbf"] == 120


def test_jwt_uri_has_host_and_path_but_no_scheme_or_query() -> None:
    assert jwt_uri("get", "https://api.coinbase.com/api/v3/brokerage/best_bid_ask?product_ids=BTC-USD") == (
        "GET api.coinbase.com/api/v3/brokerage/best_bid_ask"
    )
    assert jwt_uri("GET", "http://127.0.0.1:8765/api/v3/brokerage/products") == (
        "GET 127.0.0.1:8765/api/v3/brokerage/products"
    )


def test_auth_hook_signs_each_request_for_its_method_and_path(ec_key: CdpKey) -> None:
    prepared = requests.Request("POST", "https://api.coinbase.com/api/v3/brokerage/orders?x=1").prepare()
    CdpAuth(ec_key)(prepared)
    scheme, token = prepared.headers["Authorization"].split(" ")
    assert scheme == "Bearer"
    assert _decode(token, ec_key)[1]["uri"] == "POST api.coinbase.com/api/v3/brokerage/orders"


def test_escaped_newlines_and_quotes_are_unescaped(ec_key_pem: str) -> None:
    escaped = '"' + ec_key_pem.strip().replace("\n", "\\n") + '"'
    assert "\n" not in escaped
    key = CdpKey.from_pem(EC_NAME, escaped)
    assert key.algorithm == "ES256"
    assert key.public_key().public_numbers() == CdpKey.from_pem(EC_NAME, ec_key_pem).public_key().public_numbers()


def test_ed25519_raw_base64_seed_and_seed_plus_public(ed_key_pem: str) -> None:
    private = serialization.load_pem_private_key(ed_key_pem.encode(), None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for blob in (seed, seed + public):
        key = CdpKey.from_pem(ED_NAME, base64.b64encode(blob).decode())
        assert key.algorithm == "EdDSA"
        _decode(key.jwt("GET h/p"), CdpKey.from_pem(ED_NAME, ed_key_pem))  # same key: verifies
    with pytest.raises(AuthError, match="public half does not match"):
        CdpKey.from_pem(ED_NAME, base64.b64encode(seed + bytes(32)).decode())


def test_key_file_in_downloaded_format(tmp_path: Path, ed_key_pem: str) -> None:
    path = write_key_file(tmp_path / "cdp_api_key.json", ED_NAME, ed_key_pem)
    key = CdpKey.from_file(path)
    assert (key.name, key.algorithm) == (ED_NAME, "EdDSA")
    settings = Settings(coinbase_key_file=path, coinbase_key_name="ignored", coinbase_private_key="ignored")
    assert CdpKey.from_settings(settings).name == ED_NAME  # type: ignore[union-attr]


def test_settings_variables_and_missing_halves(ec_key_pem: str) -> None:
    assert CdpKey.from_settings(Settings()) is None
    key = CdpKey.from_settings(Settings(coinbase_key_name=EC_NAME, coinbase_private_key=ec_key_pem))
    assert key is not None and key.name == EC_NAME
    with pytest.raises(AuthError, match="BACKFARM_COINBASE_PRIVATE_KEY is not"):
        CdpKey.from_settings(Settings(coinbase_key_name=EC_NAME))
    with pytest.raises(AuthError, match="BACKFARM_COINBASE_KEY_NAME is not"):
        CdpKey.from_settings(Settings(coinbase_private_key=ec_key_pem))


def _body(pem: str) -> str:
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


def _assert_no_key_material(message: str, secret: str) -> None:
    body = _body(secret) or secret
    for i in range(0, max(1, len(body) - 12)):
        assert body[i : i + 12] not in message, "error message leaks key material"


def _pem(key: object, fmt: serialization.PrivateFormat, enc: object = None) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, enc or serialization.NoEncryption()).decode()  # type: ignore[attr-defined]


def _malformed(ec_key_pem: str) -> dict[str, tuple[str, str]]:
    lines = ec_key_pem.strip().splitlines()
    corrupted = "\n".join([lines[0], lines[1][:10] + "!!!!" + lines[1][14:], *lines[2:]])
    p384 = _pem(ec.generate_private_key(ec.SECP384R1()), serialization.PrivateFormat.TraditionalOpenSSL)
    rsa_key = _pem(rsa.generate_private_key(65537, 1024), serialization.PrivateFormat.PKCS8)
    encrypted = _pem(
        ec.generate_private_key(ec.SECP256R1()),
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    public = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {
        "truncated": ("\n".join(lines[:-1]), "truncated"),
        "corrupted": (corrupted, "could not be parsed"),
        "garbage": ("not-a-key-at-all-" + "x" * 40, "neither a PEM block nor base64"),
        "short base64": (base64.b64encode(b"0123456789").decode(), "decodes to 10 bytes"),
        "p384": (p384, "curve secp384r1"),
        "rsa": (rsa_key, "RSAPrivateKey; expected EC P-256 or Ed25519"),
        "encrypted": (encrypted, "encrypted"),
        "public": (public, "not a private key"),
        "empty": ("   ", "empty"),
    }


def test_malformed_keys_say_what_is_wrong_without_echoing_the_key(ec_key_pem: str) -> None:
    for case, (text, expected) in _malformed(ec_key_pem).items():
        with pytest.raises(AuthError) as info:
            CdpKey.from_pem(EC_NAME, text)
        message = str(info.value)
        assert expected in message, (case, message)
        # No chained library exception (whose text could quote the input) reaches a traceback.
        exc = info.value
        assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__), case
        if case != "empty":
            _assert_no_key_material(message, text)


def test_malformed_key_file_errors(tmp_path: Path, ec_key_pem: str) -> None:
    with pytest.raises(AuthError, match="does not exist"):
        CdpKey.from_file(tmp_path / "missing.json")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"name": "x", "privateKey": "' + _body(ec_key_pem))
    with pytest.raises(AuthError, match="not valid JSON") as info:
        CdpKey.from_file(bad_json)
    _assert_no_key_material(str(info.value), ec_key_pem)
    no_key = tmp_path / "nokey.json"
    no_key.write_text(json.dumps({"name": EC_NAME}))
    with pytest.raises(AuthError, match="no 'privateKey' string"):
        CdpKey.from_file(no_key)
    broken = write_key_file(tmp_path / "broken.json", EC_NAME, ec_key_pem.replace("BEGIN EC PRIVATE", "BEGIN EC PRIV"))
    with pytest.raises(AuthError, match=r"broken\.json: Coinbase private key") as info:
        CdpKey.from_file(broken)
    _assert_no_key_material(str(info.value), ec_key_pem)


def test_bad_key_names() -> None:
    with pytest.raises(AuthError, match="key name is empty"):
        CdpKey.from_pem("  ", "whatever")
    with pytest.raises(AuthError, match="whitespace"):
        CdpKey.from_pem("organizations/x/apiKeys/ y", "whatever")


def test_repr_str_and_pickle_never_show_the_key(ec_key: CdpKey, ec_key_pem: str) -> None:
    for text in (repr(ec_key), str(ec_key), repr(CdpAuth(ec_key))):
        assert EC_NAME in text
        _assert_no_key_material(text, ec_key_pem)
        assert "PRIVATE" not in text
    with pytest.raises(TypeError, match="cannot be serialised or copied"):
        pickle.dumps(ec_key)
    with pytest.raises(TypeError, match="cannot be serialised or copied"):
        copy.deepcopy(ec_key)
    settings = Settings(coinbase_key_name=EC_NAME, coinbase_private_key=ec_key_pem)
    _assert_no_key_material(repr(settings), ec_key_pem)


# --------------------------------------------------------------------------------- simulator-side verification


@pytest.fixture
def registry(ec_key: CdpKey, ed_key: CdpKey) -> KeyRegistry:
    reg = KeyRegistry()
    reg.register(ec_key)
    reg.register(ed_key)
    return reg


def test_registry_accepts_both_key_types(registry: KeyRegistry, ec_key: CdpKey, ed_key: CdpKey) -> None:
    uri = "GET 127.0.0.1:1/api/v3/brokerage/products"
    for key in (ec_key, ed_key):
        assert registry.verify(key.jwt(uri, now=NOW), uri, now=NOW + 5) == key.name
        assert registry.verify(key.ws_jwt(), None) == key.name


def test_registry_rejections(registry: KeyRegistry, ec_key: CdpKey, ec_key_pem: str) -> None:
    uri = "GET 127.0.0.1:1/api/v3/brokerage/products"
    token = ec_key.jwt(uri, now=NOW)
    impostor = CdpKey.from_pem(
        EC_NAME, _pem(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.TraditionalOpenSSL)
    )
    stranger = CdpKey.from_pem("organizations/o/apiKeys/unknown", ec_key_pem)
    cases = {
        "expired": (token, uri, NOW + 200, "expired"),
        "not yet valid": (token, uri, NOW - 100, "not yet valid"),
        "wrong uri": (token, "GET 127.0.0.1:1/api/v3/brokerage/accounts", NOW, "does not match"),
        "bad signature": (impostor.jwt(uri, now=NOW), uri, NOW, "InvalidSignatureError"),
        "unknown key": (stranger.jwt(uri, now=NOW), uri, NOW, "unknown key"),
        "garbage": ("abc.def", uri, NOW, "malformed"),
    }
    for case, (tok, want_uri, now, reason) in cases.items():
        with pytest.raises(Unauthorized, match=reason):
            registry.verify(tok, want_uri, now=now)
        assert case


def test_registry_rejects_overlong_and_wrong_issuer(registry: KeyRegistry, ec_key: CdpKey) -> None:
    private = ec_key._private_key
    headers = {"kid": ec_key.name, "nonce": "ab"}
    base = {"sub": ec_key.name, "iss": "cdp", "nbf": NOW, "exp": NOW + 120}
    long_lived = jwt.encode({**base, "exp": NOW + 3600}, private, "ES256", headers=headers)
    with pytest.raises(Unauthorized, match="lifetime"):
        registry.verify(long_lived, None, now=NOW)
    wrong_iss = jwt.encode({**base, "iss": "me"}, private, "ES256", headers=headers)
    with pytest.raises(Unauthorized, match="issuer"):
        registry.verify(wrong_iss, None, now=NOW)
    legacy = jwt.encode(
        {**base, "iss": "coinbase-cloud", "aud": ["public_websocket_api"]}, private, "ES256", headers=headers
    )
    assert registry.verify(legacy, None, now=NOW) == ec_key.name
    assert time.time() > NOW
