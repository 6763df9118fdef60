"""Envelope encryption for secrets at rest (AES-256-GCM).

Each `seal()` draws a fresh 256-bit data key, encrypts the plaintext with it, and wraps the data
key with the key-encryption key (KEK). The blob names which KEK wrapped it, so a KEK can be
rotated: configure the new one as current and the old one as previous, then `rewrap()` rows.

    env = Envelope.from_keys(current=kek_bytes)
    blob = env.seal(b"secret", aad=b"credential_providers/cp_123")
    env.open(blob, aad=b"credential_providers/cp_123") == b"secret"

Blob layout: b"SE1" | kek_id(8) | wrap_nonce(12) | wrapped_dek(48) | nonce(12) | ciphertext+tag.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controlplane.errors import KekUnavailable, SesameError, StartupError

__all__ = ["Envelope", "EnvelopeError", "kek_id", "load_kek"]

_MAGIC = b"SE1"
_KEK_ID_LEN = 8
_NONCE = 12
_WRAPPED_DEK = 32 + 16
_HEADER = len(_MAGIC) + _KEK_ID_LEN + _NONCE + _WRAPPED_DEK + _NONCE


class EnvelopeError(SesameError):
    """A sealed blob is malformed, tampered with, or wrapped by an unknown KEK."""

    code, status = "secret_unreadable", 500


def kek_id(kek: bytes) -> bytes:
    """A short non-secret fingerprint of a KEK, stored in each blob."""
    return hashlib.sha256(b"sesame-kek-id:" + kek).digest()[:_KEK_ID_LEN]


def load_kek(
    *, value: str | None = None, path: Path | None = None, source: str = "SESAME_KEK"
) -> bytes | None:
    """Decode a KEK given as base64 text, or read from a file (raw 32 bytes or base64 text)."""
    if path is not None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise StartupError(f"cannot read KEK file {path}: {exc.strerror}") from exc
        if len(raw) == 32:
            return raw
        value = raw.decode("ascii", "replace").strip()
        source = str(path)
    if value is None or value == "":
        return None
    try:
        kek = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        raise StartupError(f"{source} is not valid base64") from None
    if len(kek) != 32:
        raise StartupError(f"{source} must decode to exactly 32 bytes (got {len(kek)})")
    return kek


@dataclass(frozen=True)
class Envelope:
    """Seals and opens secrets; `current` may be None, in which case both raise kek_unavailable."""

    current: bytes | None = field(default=None, repr=False)
    previous: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def from_keys(cls, current: bytes | None, previous: tuple[bytes, ...] = ()) -> Envelope:
        return cls(current, previous)

    @property
    def enabled(self) -> bool:
        return self.current is not None

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Encrypt under a fresh data key wrapped by the current KEK."""
        if self.current is None:
            raise KekUnavailable("no key-encryption key configured (set SESAME_KEK or SESAME_KEK_FILE)")
        dek = AESGCM.generate_key(bit_length=256)
        wrap_nonce, nonce = os.urandom(_NONCE), os.urandom(_NONCE)
        kid = kek_id(self.current)
        wrapped = AESGCM(self.current).encrypt(wrap_nonce, dek, _MAGIC + kid)
        body = AESGCM(dek).encrypt(nonce, plaintext, aad)
        return _MAGIC + kid + wrap_nonce + wrapped + nonce + body

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        """Decrypt a blob sealed by the current or a previous KEK (and the same `aad`)."""
        kid, wrap_nonce, wrapped, nonce, body = _split(blob)
        kek = self._kek_for(kid)
        try:
            dek = AESGCM(kek).decrypt(wrap_nonce, wrapped, _MAGIC + kid)
            return AESGCM(dek).decrypt(nonce, body, aad)
        except InvalidTag:
            raise EnvelopeError("sealed secret failed authentication") from None

    def can_open(self, blob: bytes) -> bool:
        """Whether a configured KEK wrapped this blob (no decryption)."""
        try:
            self._kek_for(_split(blob)[0])
        except (EnvelopeError, KekUnavailable):
            return False
        return True

    def rewrap(self, blob: bytes) -> bytes:
        """Re-wrap the data key under the current KEK; the ciphertext is kept."""
        kid, wrap_nonce, wrapped, nonce, body = _split(blob)
        try:
            dek = AESGCM(self._kek_for(kid)).decrypt(wrap_nonce, wrapped, _MAGIC + kid)
        except InvalidTag:
            raise EnvelopeError("sealed secret failed authentication") from None
        assert self.current is not None  # _kek_for raised otherwise
        new_kid, new_nonce = kek_id(self.current), os.urandom(_NONCE)
        new_wrapped = AESGCM(self.current).encrypt(new_nonce, dek, _MAGIC + new_kid)
        return _MAGIC + new_kid + new_nonce + new_wrapped + nonce + body

    def _kek_for(self, kid: bytes) -> bytes:
        if self.current is None:
            raise KekUnavailable("no key-encryption key configured (set SESAME_KEK or SESAME_KEK_FILE)")
        for kek in (self.current, *self.previous):
            if kek_id(kek) == kid:
                return kek
        raise EnvelopeError("secret was sealed by a key-encryption key that is not configured")


def _split(blob: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    if len(blob) < _HEADER + 16 or not blob.startswith(_MAGIC):
        raise EnvelopeError("not a sealed secret")
    i = len(_MAGIC)
    kid = blob[i : i + _KEK_ID_LEN]
    i += _KEK_ID_LEN
    wrap_nonce = blob[i : i + _NONCE]
    i += _NONCE
    wrapped = blob[i : i + _WRAPPED_DEK]
    i += _WRAPPED_DEK
    nonce = blob[i : i + _NONCE]
    return kid, wrap_nonce, wrapped, nonce, blob[i + _NONCE :]
