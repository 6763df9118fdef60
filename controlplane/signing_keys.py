"""The control plane's ES256 signing keys: stored sealed, published as a JWKS, rotatable.

The newest unretired key signs. A rotated-out key stays in the JWKS until every token it can
have signed has expired (retired_at + the longest signed-JWT lifetime), so verifiers that cache
the JWKS keep working across a rotation. Replicas share keys through the store.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane.clock import Clock, SystemClock
from controlplane.envelope import Envelope

__all__ = [
    "DEFAULT_KEY_RELOAD_SECONDS",
    "DEFAULT_MAX_SIGNED_JWT_TTL_SECONDS",
    "SigningKey",
    "SigningKeyStore",
    "SigningKeys",
    "StoredSigningKey",
    "discovery_document",
]

DEFAULT_MAX_SIGNED_JWT_TTL_SECONDS = 3600
DEFAULT_KEY_RELOAD_SECONDS = 30
ALG = "ES256"


@dataclass(frozen=True, kw_only=True)
class StoredSigningKey:
    """A row of `signing_keys`: the private key only ever as an envelope-sealed PKCS#8 blob."""

    kid: str
    created_at: float
    retired_at: float | None
    sealed_private_key: bytes = field(repr=False)


class SigningKeyStore(Protocol):
    async def list_signing_keys(self) -> list[StoredSigningKey]: ...

    async def add_signing_key(self, key: StoredSigningKey, *, retire_others_at: float | None) -> None:
        """Insert `key`; with `retire_others_at`, retire every other unretired key in the same transaction."""
        ...


@dataclass(frozen=True, kw_only=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    created_at: float
    retired_at: float | None

    def jwk(self) -> dict[str, str]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "use": "sig",
            "alg": ALG,
            "kid": self.kid,
            "x": _b64(numbers.x.to_bytes(32, "big")),
            "y": _b64(numbers.y.to_bytes(32, "big")),
        }


class SigningKeys:
    """Loads, creates and rotates the key set; `signer()` returns the current key."""

    def __init__(
        self,
        *,
        store: SigningKeyStore,
        envelope: Envelope,
        clock: Clock = SystemClock(),
        max_token_ttl_seconds: int = DEFAULT_MAX_SIGNED_JWT_TTL_SECONDS,
        reload_seconds: float = DEFAULT_KEY_RELOAD_SECONDS,
    ) -> None:
        self._store = store
        self._envelope = envelope
        self._clock = clock
        self.max_token_ttl_seconds = max_token_ttl_seconds
        self._reload_seconds = reload_seconds
        self._keys: list[SigningKey] = []
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read every key from the store (opening sealed blobs); cheap enough to repeat."""
        rows = await self._store.list_signing_keys()
        keys = []
        for row in rows:
            pem = self._envelope.open(row.sealed_private_key, aad=_aad(row.kid))
            private = serialization.load_pem_private_key(pem, password=None)
            assert isinstance(private, ec.EllipticCurvePrivateKey)
            keys.append(
                SigningKey(
                    kid=row.kid, private_key=private, created_at=row.created_at, retired_at=row.retired_at
                )
            )
        self._keys = sorted(keys, key=lambda k: k.created_at)
        self._loaded_at = self._clock.time()

    async def _maybe_reload(self) -> None:
        if self._loaded_at is None or self._clock.time() - self._loaded_at >= self._reload_seconds:
            await self.load()

    async def signer(self) -> SigningKey:
        """The newest unretired key, created on first use (needs the KEK)."""
        await self._maybe_reload()
        current = self._current()
        if current is None:
            async with self._lock:
                await self.load()
                current = self._current() or await self._create(retire_others=False)
        return current

    async def rotate(self) -> tuple[SigningKey, list[str]]:
        """Make a new current key; returns it and the kids it retired."""
        async with self._lock:
            await self.load()
            retired = [k.kid for k in self._keys if k.retired_at is None]
            return await self._create(retire_others=True), retired

    async def jwks(self) -> dict[str, Any]:
        """Current key plus retired keys whose tokens may still be unexpired."""
        await self._maybe_reload()
        now = self._clock.time()
        published = [
            k for k in self._keys if k.retired_at is None or k.retired_at + self.max_token_ttl_seconds > now
        ]
        return {"keys": [k.jwk() for k in reversed(published)]}

    def _current(self) -> SigningKey | None:
        live = [k for k in self._keys if k.retired_at is None]
        return live[-1] if live else None

    async def _create(self, *, retire_others: bool) -> SigningKey:
        # Key generation is CPU work: keep it off the event loop.
        private = await asyncio.to_thread(ec.generate_private_key, ec.SECP256R1())
        der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        kid = _b64(hashlib.sha256(der).digest())[:32]
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        now = self._clock.time()
        row = StoredSigningKey(
            kid=kid,
            created_at=now,
            retired_at=None,
            sealed_private_key=self._envelope.seal(pem, aad=_aad(kid)),
        )
        await self._store.add_signing_key(row, retire_others_at=now if retire_others else None)
        await self.load()
        return next(k for k in self._keys if k.kid == kid)


def discovery_document(issuer_url: str) -> dict[str, Any]:
    """What standard OIDC tooling needs to find and verify the control plane's signed JWTs."""
    base = issuer_url.rstrip("/")
    return {
        "issuer": base,
        "jwks_uri": base + "/v1/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALG],
    }


def _aad(kid: str) -> bytes:
    return b"signing_keys/" + kid.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
