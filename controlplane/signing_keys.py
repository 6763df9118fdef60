"""The control plane's ES256 signing keys: stored sealed, published as a JWKS, rotated without a gap.

A key moves `next` → `active` → `retired` (its `state` in the store):

- It is *published* from the commit that creates it: every JWKS answer and every signature reads
  the key set from the store (one small query; sealed blobs are opened once per kid), so no
  replica serves or signs from a stale copy.
- It *signs* only from its `active_from`. With a publication delay D (`--key-publication-delay`,
  default 0) a rotation creates the new key as `next`, in every replica's JWKS D seconds before it
  signs, for verifiers that cache the JWKS without refetching on an unknown `kid`; the first
  signer after `active_from` promotes it and retires the previous key in one transaction.
- Exactly one key is `active` and at most one is `next`, enforced by unique partial indexes, so
  replicas that create the first key (or rotate) at the same moment agree on one: the loser re-reads.
- A retired key stays published until every token it can have signed has expired
  (`retired_at` + the longest signed-JWT lifetime).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane.clock import Clock, SystemClock
from controlplane.envelope import Envelope
from controlplane.errors import SesameError

__all__ = [
    "DEFAULT_KEY_PUBLICATION_SECONDS",
    "DEFAULT_MAX_SIGNED_JWT_TTL_SECONDS",
    "KeyState",
    "SigningKey",
    "SigningKeyStore",
    "SigningKeys",
    "SigningKeysUnsettled",
    "StoredSigningKey",
    "discovery_document",
]

DEFAULT_MAX_SIGNED_JWT_TTL_SECONDS = 3600
DEFAULT_KEY_PUBLICATION_SECONDS = 0.0
ALG = "ES256"
# Reads of a key set that other replicas keep changing before giving up (never met in practice).
_ATTEMPTS = 5

KeyState = Literal["next", "active", "retired"]
_STATE_ORDER = {"retired": 0, "active": 1, "next": 2}  # oldest first; JWKS lists them newest first


class SigningKeysUnsettled(SesameError):
    """The key set changed under every attempt to read or change it; the caller may retry."""

    code, status = "signing_key_unavailable", 503


@dataclass(frozen=True, kw_only=True)
class StoredSigningKey:
    """A row of `signing_keys`: the private key only ever as an envelope-sealed PKCS#8 blob."""

    kid: str
    state: KeyState
    created_at: float
    active_from: float
    retired_at: float | None
    sealed_private_key: bytes = field(repr=False)


class SigningKeyStore(Protocol):
    async def list_signing_keys(self, *, retired_after: float) -> list[StoredSigningKey]:
        """Keys not retired or retired after `retired_after`, oldest first."""
        ...

    async def add_signing_key(self, key: StoredSigningKey, *, retire: str | None) -> bool:
        """Insert `key`; with `retire`, retire that still-active key at `key.active_from` in the
        same transaction. False (nothing written) when another writer got there first."""
        ...

    async def promote_signing_key(self, kid: str, *, retire: str | None, at: float) -> bool:
        """`kid` next → active and `retire` active → retired at `at`, in one transaction; False
        (nothing written) when another writer got there first."""
        ...


@dataclass(frozen=True, kw_only=True)
class SigningKey:
    kid: str
    state: KeyState
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    created_at: float
    active_from: float
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


@dataclass(frozen=True, kw_only=True)
class _KeySet:
    keys: list[SigningKey]

    def one(self, state: KeyState) -> SigningKey | None:
        return next((k for k in self.keys if k.state == state), None)


class SigningKeys:
    """The key set of one replica: `signer()` for signing, `jwks()` to publish, `rotate()`."""

    def __init__(
        self,
        *,
        store: SigningKeyStore,
        envelope: Envelope,
        clock: Clock = SystemClock(),
        max_token_ttl_seconds: int = DEFAULT_MAX_SIGNED_JWT_TTL_SECONDS,
        publication_seconds: float = DEFAULT_KEY_PUBLICATION_SECONDS,
    ) -> None:
        self._store = store
        self._envelope = envelope
        self._clock = clock
        self.max_token_ttl_seconds = max_token_ttl_seconds
        self.publication_seconds = publication_seconds
        self._opened: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._lock = asyncio.Lock()  # one creation at a time in this process; the database settles replicas

    async def signer(self) -> SigningKey:
        """The active key (promoting a due `next` key first); the first one is created on first use."""
        for _ in range(_ATTEMPTS):
            keys = await self._read()
            if await self._promote_due(keys):
                continue
            active = keys.one("active")
            if active is not None:
                return active
            async with self._lock:
                if (await self._read()).one("active") is None:
                    await self._add(state="active", retire=None)
        raise SigningKeysUnsettled("the signing key set kept changing; retry")

    async def rotate(self) -> tuple[SigningKey, list[str]]:
        """Start a rotation: returns the new key and the kid it retires (when its `active_from` comes).

        Without a publication delay the new key is active at once. With one, it is `next` until
        then; rotating again meanwhile returns that same pending key.
        """
        async with self._lock:
            lost, lost_to = False, None  # another replica rotated first: the key it retired
            for _ in range(_ATTEMPTS):
                keys = await self._read()
                if await self._promote_due(keys):
                    continue
                active, pending = keys.one("active"), keys.one("next")
                retiring = [active.kid] if active is not None else []
                if pending is not None:
                    return pending, retiring
                if lost and active is not None and active.kid != lost_to:
                    return active, [lost_to] if lost_to else []  # rotations at once make one rotation
                at_once = active is None or self.publication_seconds <= 0
                added = await self._add(
                    state="active" if at_once else "next",
                    retire=active.kid if at_once and active is not None else None,
                )
                if added is not None:
                    return added, retiring
                lost, lost_to = True, active.kid if active is not None else None
        raise SigningKeysUnsettled("the signing key set kept changing; retry")

    async def jwks(self) -> dict[str, Any]:
        """Every published key, newest first: next, active, then retired keys whose tokens may live."""
        keys = await self._read()
        return {"keys": [k.jwk() for k in reversed(keys.keys)]}

    async def _read(self) -> _KeySet:
        """The published keys as stored now (opening each sealed blob once per kid)."""
        rows = await self._store.list_signing_keys(
            retired_after=self._clock.time() - self.max_token_ttl_seconds
        )
        rows = sorted(rows, key=lambda r: (_STATE_ORDER[r.state], r.active_from, r.created_at, r.kid))
        opened = {row.kid: self._opened.get(row.kid) or self._open(row) for row in rows}
        self._opened = opened  # forget keys that are no longer published
        return _KeySet(
            keys=[
                SigningKey(
                    kid=row.kid,
                    state=row.state,
                    private_key=opened[row.kid],
                    created_at=row.created_at,
                    active_from=row.active_from,
                    retired_at=row.retired_at,
                )
                for row in rows
            ]
        )

    def _open(self, row: StoredSigningKey) -> ec.EllipticCurvePrivateKey:
        pem = self._envelope.open(row.sealed_private_key, aad=_aad(row.kid))
        private = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        return private

    async def _promote_due(self, keys: _KeySet) -> bool:
        """Promote the `next` key whose `active_from` has come; True when the set must be re-read."""
        pending = keys.one("next")
        if pending is None or pending.active_from > self._clock.time():
            return False
        active = keys.one("active")
        await self._store.promote_signing_key(
            pending.kid, retire=active.kid if active is not None else None, at=pending.active_from
        )
        return True

    async def _add(self, *, state: KeyState, retire: str | None) -> SigningKey | None:
        """Create and store a key (None when another replica changed the set first)."""
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
            state=state,
            created_at=now,
            active_from=now if state == "active" else now + self.publication_seconds,
            retired_at=None,
            sealed_private_key=self._envelope.seal(pem, aad=_aad(kid)),
        )
        if not await self._store.add_signing_key(row, retire=retire):
            return None
        self._opened[kid] = private
        return SigningKey(
            kid=kid,
            state=state,
            private_key=private,
            created_at=now,
            active_from=row.active_from,
            retired_at=None,
        )


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
