"""The farm over TLS (``rediss://``): a worker and the client verify Redis' certificate against the CA named in the
URL, and a certificate from an unknown CA is refused. Skipped where redis-server was built without TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from pathlib import Path

import pytest

from backfarm._util.connection import check_redis
from backfarm.config import Settings
from backfarm.errors import ConfigError, ServiceUnavailable
from backfarm.farm.client import FarmClient
from backfarm.results.redis_store import RedisStore
from tests.farm.conftest import assert_exactly_once, chaos_spec, submit
from tests.redis_server import free_port
from tests.workers import Farm, wait_for

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

PASSWORD = "tls-pw"


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _ca(directory: Path, name: str) -> tuple[object, object, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, cert, _pem(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))


def _server_cert(directory: Path, ca_key: object, ca_cert: object) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )  # fmt: skip
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_path = _pem(directory / "server.pem", cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, _pem(directory / "server.key", key_pem)


@pytest.fixture
def tls_redis(tmp_path: Path) -> object:
    ca_key, ca_cert, ca_path = _ca(tmp_path, "farm-ca")
    _, _, other_ca = _ca(tmp_path, "other-ca")
    cert, key = _server_cert(tmp_path, ca_key, ca_cert)
    port = free_port()
    cmd = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    cmd += ["--tls-ca-cert-file", str(ca_path), "--tls-auth-clients", "no", "--requirepass", PASSWORD]
    cmd += ["--dir", str(tmp_path), "--logfile", str(tmp_path / "redis.log")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca_path}"
    try:
        settings = Settings(redis_url=url)

        def up() -> bool:
            if proc.poll() is not None:
                pytest.skip(f"redis-server cannot serve TLS here: {(tmp_path / 'redis.log').read_text()[-300:]}")
            try:
                check_redis(settings.require_redis_url())
                return True
            except ServiceUnavailable:
                return False

        wait_for(up, 15, "redis-server to serve TLS")
        yield url, str(other_ca)
    finally:
        proc.kill()
        proc.wait()


def test_the_farm_runs_over_tls_and_refuses_an_unknown_certificate(
    farm: Farm, tls_redis: tuple[str, str], chaos: None
) -> None:
    url, other_ca = tls_redis
    wrong = url.split("?")[0] + f"?ssl_ca_certs={other_ca}"
    with pytest.raises(ConfigError, match="certificate verify failed"):
        check_redis(wrong)
    farm.env["BACKFARM_REDIS_URL"] = url
    settings = farm.settings
    worker = farm.start("tls")
    farm.ready(worker)
    with RedisStore(url) as store, FarmClient(settings, store) as client:
        sweep_id = submit(settings, store, chaos_spec([{"every": n} for n in range(2, 12)]))
        assert client.wait(sweep_id, stall_s=10**6, timeout_s=30).complete
        assert_exactly_once(store, sweep_id)
    assert "rediss://:**@127.0.0.1" in worker.text() and PASSWORD not in worker.text()
