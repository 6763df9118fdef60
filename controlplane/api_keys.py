"""Admin API keys: `ses_` + 40 random characters, shown once, stored as SHA-256, revoked at once.

The prefix (first 12 characters) finds candidate rows; the hash is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from controlplane.clock import Clock, format_ts
from controlplane.errors import Unauthorized
from controlplane.ids import new_id
from controlplane.permissions import Role
from controlplane.store.base import ApiKey, ApiKeyStore
from controlplane.store.sql.database import UniqueViolation

__all__ = ["KEY_PREFIX", "ApiKeys", "generate_key", "hash_key", "key_prefix"]

KEY_PREFIX = "ses_"
PREFIX_LENGTH = 12
TOUCH_INTERVAL_SECONDS = 60.0  # last_used_at is refreshed at most this often per key


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)  # 40 characters, 240 bits


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


class ApiKeys:
    """Creates, authenticates and revokes admin keys."""

    def __init__(self, store: ApiKeyStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._touched: dict[str, float] = {}

    async def create(self, *, name: str, role: Role, key: str | None = None) -> tuple[ApiKey, str]:
        """Store a new key (or the given one); returns the record and the plaintext, once."""
        plaintext = key or generate_key()
        record = ApiKey(
            id=new_id("key"),
            name=name,
            role=role.label,
            prefix=key_prefix(plaintext),
            key_hash=hash_key(plaintext),
            created_at=format_ts(self._clock.time()),
        )
        await self._store.create(record)
        return record, plaintext

    async def authenticate(self, presented: str) -> ApiKey:
        """The key record for a presented bearer key; 401 unauthorized otherwise."""
        if not presented.startswith(KEY_PREFIX) or len(presented) > 200:
            raise Unauthorized("invalid API key")
        digest = hash_key(presented)
        match = None
        for candidate in await self._store.by_prefix(key_prefix(presented)):
            if hmac.compare_digest(candidate.key_hash, digest):
                match = candidate
        if match is None:
            raise Unauthorized("invalid API key")
        now = self._clock.time()
        if now - self._touched.get(match.id, 0.0) >= TOUCH_INTERVAL_SECONDS:
            self._touched[match.id] = now
            await self._store.touch(match.id, format_ts(now))
        return match

    async def ensure_bootstrap(self, key: str) -> bool:
        """Register `key` as owner if no owner exists yet (Helm bootstrap). True if created."""
        if await self._store.count_role(Role.OWNER.label) > 0:
            return False
        try:
            await self.create(name="bootstrap", role=Role.OWNER, key=key)
        except UniqueViolation:  # another replica registered the same key a moment ago
            return False
        return True

    async def revoke(self, id: str) -> bool:
        self._touched.pop(id, None)
        return await self._store.delete(id)
