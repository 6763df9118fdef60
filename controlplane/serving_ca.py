"""The webhook's self-managed CA: a CA that outlives its leaves, and the leaves it signs (pure).

`plan` takes what is stored (CAs with their keys, the current leaf) and returns what should be:
expired CAs dropped; a new CA added (overlap) once the newest cannot cover two more leaves; the leaf
signed by the oldest CA that outlives it (so pods holding an older bundle keep trusting it for as
long as possible) and renewed when a third of its lifetime is left, its names changed or its
signer did. `sesame-k8s-bootstrap` stores the result (see docs/kubernetes.md, "Certificates").
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Authority", "Leaf", "ServingPlan", "load_authorities", "load_leaf", "plan"]

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Leaf:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class ServingPlan:
    authorities: tuple[Authority, ...]  # oldest first; every one is in the caBundle
    leaf: Leaf
    changed: bool

    def ca_bundle(self) -> bytes:
        return b"".join(a.cert.public_bytes(serialization.Encoding.PEM) for a in self.authorities)

    def ca_keys(self) -> bytes:
        return b"".join(_key_pem(a.key) for a in self.authorities)

    def leaf_pem(self) -> tuple[bytes, bytes]:
        return self.leaf.cert.public_bytes(serialization.Encoding.PEM), _key_pem(self.leaf.key)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_authorities(certs_pem: bytes, keys_pem: bytes) -> list[Authority]:
    """Pair stored CA certificates with their keys (by public key); unpaired ones are dropped."""
    if not certs_pem or not keys_pem:
        return []
    keys = [
        serialization.load_pem_private_key(b"-----BEGIN" + block, None)
        for block in keys_pem.split(b"-----BEGIN")[1:]
    ]
    by_public = {
        k.public_key().public_bytes(*_SPKI): k for k in keys if isinstance(k, ec.EllipticCurvePrivateKey)
    }
    pairs = []
    for cert in x509.load_pem_x509_certificates(certs_pem):
        key = by_public.get(cert.public_key().public_bytes(*_SPKI))
        if key is not None:
            pairs.append(Authority(cert, key))
    return pairs


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_leaf(cert_pem: bytes, key_pem: bytes) -> Leaf | None:
    if not cert_pem or not key_pem:
        return None
    key = serialization.load_pem_private_key(key_pem, None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return Leaf(x509.load_pem_x509_certificate(cert_pem), key)


def plan(
    *,
    now: datetime.datetime,
    authorities: list[Authority],
    leaf: Leaf | None,
    names: list[str],
    common_name: str,
    ca_days: int,
    leaf_days: int,
) -> ServingPlan:
    """What the stored CA and leaf should be at ``now`` (see the module docstring)."""
    if ca_days < 3 * leaf_days:
        raise ValueError("the CA must outlive at least three leaves (ca_days >= 3 * leaf_days)")
    leaf_life = leaf_days * DAY
    cas = sorted((a for a in authorities if a.cert.not_valid_after_utc > now), key=_expiry)
    changed = len(cas) != len(authorities)
    if not cas or _expiry(cas[-1]) - now < 2 * leaf_life:
        cas.append(_new_authority(common_name, now, ca_days))
        changed = True
    signer = next(a for a in cas if _expiry(a) - now >= leaf_life)
    if leaf is None or _needs_renewal(leaf, signer, names, now, leaf_life):
        leaf = _new_leaf(signer, names, common_name, now, leaf_days)
        changed = True
    return ServingPlan(tuple(cas), leaf, changed)


def _expiry(authority: Authority) -> datetime.datetime:
    return authority.cert.not_valid_after_utc


def _needs_renewal(
    leaf: Leaf, signer: Authority, names: list[str], now: datetime.datetime, life: datetime.timedelta
) -> bool:
    cert = leaf.cert
    if cert.issuer != signer.cert.subject:
        return True
    try:
        cert.verify_directly_issued_by(signer.cert)
    except (ValueError, TypeError, InvalidSignature):
        return True
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if sorted(sans.get_values_for_type(x509.DNSName)) != sorted(names):
        return True
    return cert.not_valid_after_utc - now < life / 3


def _new_authority(common_name: str, now: datetime.datetime, days: int) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} webhook CA {now:%Y%m%d}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + days * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def _new_leaf(
    signer: Authority, names: list[str], common_name: str, now: datetime.datetime, days: int
) -> Leaf:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(signer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + days * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()), critical=False
        )
        .sign(signer.key, hashes.SHA256())
    )
    return Leaf(cert, key)
