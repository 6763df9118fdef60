"""A PKCS#12 trust store that Java accepts: certificate bags marked as trusted, HMAC-SHA256 integrity.

cryptography 44 (pinned by mitmproxy 11) cannot add Java's trusted-key-usage attribute, without which
Java loads a certificate-only PKCS#12 as empty; so the few DER structures are written here (RFC 7292).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = ["serialize", "trust_entries"]

_DATA = "1.2.840.113549.1.7.1"
_CERT_BAG = "1.2.840.113549.1.12.10.1.3"
_X509_CERT = "1.2.840.113549.1.9.22.1"
_FRIENDLY_NAME = "1.2.840.113549.1.9.20"
_JAVA_TRUSTED_KEY_USAGE = "2.16.840.1.113894.746875.1.1"
_ANY_EXTENDED_KEY_USAGE = "2.5.29.37.0"
_SHA256 = "2.16.840.1.101.3.4.2.1"
_MAC_ITERATIONS = 10_000


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _set(*items: bytes) -> bytes:
    return _tlv(0x31, b"".join(sorted(items)))


def _explicit0(body: bytes) -> bytes:
    return _tlv(0xA0, body)


def _octets(body: bytes) -> bytes:
    return _tlv(0x04, body)


def _int(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def _bmp(text: str) -> bytes:
    return text.encode("utf-16-be")


def _kdf(password: bytes, salt: bytes, ident: int, iterations: int, size: int) -> bytes:
    """RFC 7292 appendix B.2 key derivation with SHA-256 (u = 32, v = 64)."""
    u, v = 32, 64

    def fill(data: bytes) -> bytes:  # repeat to a whole number of v-byte blocks
        n = v * ((len(data) + v - 1) // v)
        return (data * (n // len(data) + 1))[:n] if data else b""

    block = fill(salt) + fill(password)
    out = b""
    while len(out) < size:
        a = hashlib.sha256(bytes([ident]) * v + block).digest()
        for _ in range(iterations - 1):
            a = hashlib.sha256(a).digest()
        out += a
        b = int.from_bytes((a * (v // u + 1))[:v], "big")
        block = b"".join(
            ((int.from_bytes(block[j : j + v], "big") + b + 1) % (1 << (8 * v))).to_bytes(v, "big")
            for j in range(0, len(block), v)
        )
    return out[:size]


def trust_entries(roots_pem: bytes, ca_pem: bytes) -> list[tuple[str, x509.Certificate]]:
    """The system roots (as the JDK's cacerts holds them) plus the pod CA, with unique aliases.

    A store with only the pod CA makes Java distrust every public host; so every certificate of the
    system bundle that parses is kept (duplicates once), and the pod CA is added last.
    """
    entries: list[tuple[str, x509.Certificate]] = []
    seen: set[bytes] = set()
    for index, block in enumerate(roots_pem.split(b"-----BEGIN CERTIFICATE-----")[1:]):
        try:
            cert = x509.load_pem_x509_certificate(b"-----BEGIN CERTIFICATE-----" + block)
            der = cert.public_bytes(Encoding.DER)
        except ValueError:
            continue  # one unreadable entry must not cost the app every other root
        if der in seen:
            continue
        seen.add(der)
        entries.append((f"system-{index:03d}-{hashlib.sha256(der).hexdigest()[:12]}", cert))
    entries.append(("sesame-pod-ca", x509.load_pem_x509_certificate(ca_pem)))
    return entries


def serialize(certs: list[tuple[str, x509.Certificate]], password: str) -> bytes:
    """DER PKCS#12 holding each (alias, certificate) as a trusted certificate entry."""
    bags = [
        _seq(
            _oid(_CERT_BAG),
            _explicit0(_seq(_oid(_X509_CERT), _explicit0(_octets(cert.public_bytes(Encoding.DER))))),
            _set(
                _seq(_oid(_FRIENDLY_NAME), _set(_tlv(0x1E, _bmp(alias)))),
                _seq(_oid(_JAVA_TRUSTED_KEY_USAGE), _set(_oid(_ANY_EXTENDED_KEY_USAGE))),
            ),
        )
        for alias, cert in certs
    ]
    safe_contents = _seq(*bags)
    auth_safe = _seq(_seq(_oid(_DATA), _explicit0(_octets(safe_contents))))
    salt = os.urandom(16)
    key = _kdf(_bmp(password) + b"\x00\x00", salt, 3, _MAC_ITERATIONS, 32)
    mac = hmac.new(key, auth_safe, hashlib.sha256).digest()
    mac_data = _seq(
        _seq(_seq(_oid(_SHA256), b"\x05\x00"), _octets(mac)), _octets(salt), _int(_MAC_ITERATIONS)
    )
    return _seq(_int(3), _seq(_oid(_DATA), _explicit0(_octets(auth_safe))), mac_data)
