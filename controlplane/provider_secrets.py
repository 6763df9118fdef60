"""Sealing and opening credential-provider secrets (one place for the envelope AAD).

The secret fields of a provider's config are stored as one sealed JSON object, bound to the
provider's id so a blob copied to another row does not open.
"""

from __future__ import annotations

import json
from typing import Any

from controlplane.envelope import Envelope
from controlplane.store.base import RegistryStore

__all__ = ["load_provider", "open_secret", "seal_secret"]

KIND = "credential_providers"


def _aad(provider_id: str) -> bytes:
    return f"{KIND}/{provider_id}".encode()


def seal_secret(envelope: Envelope, provider_id: str, secret: dict[str, Any]) -> bytes:
    return envelope.seal(json.dumps(secret, sort_keys=True).encode(), aad=_aad(provider_id))


def open_secret(envelope: Envelope, provider_id: str, blob: bytes | None) -> dict[str, Any]:
    if not blob:
        return {}
    return json.loads(envelope.open(blob, aad=_aad(provider_id)))


async def load_provider(
    registry: RegistryStore, envelope: Envelope, provider_id: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(provider record with public `config`, decrypted secret fields), or None if it doesn't exist.

    For token exchange: `MintRequest(config=record["config"], secret=secret, ...)`.
    """
    record = await registry.get(KIND, provider_id)
    if record is None:
        return None
    return record, open_secret(envelope, provider_id, await registry.get_secret(KIND, provider_id))
