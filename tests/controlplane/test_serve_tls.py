"""`serve --tls-cert/--tls-key` serves HTTPS (the admission webhook needs it), verified by a real client."""

from __future__ import annotations

import datetime
import ipaddress
import ssl

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devkit.controlplane_server import control_plane_process


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sesame-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_serve_over_https(tmp_path):
    cert, key = _self_signed(tmp_path)
    with control_plane_process(
        tmp_path / "cp.db", args=("--tls-cert", str(cert), "--tls-key", str(key))
    ) as cp:
        assert cp.url.startswith("https://127.0.0.1:")
        with httpx.Client(base_url=cp.url, verify=ssl.create_default_context(cafile=str(cert))) as client:
            assert client.get("/healthz").status_code == 200
            resp = client.get("/v1/workloads", headers={"Authorization": f"Bearer {cp.owner_key}"})
            assert resp.status_code == 200
