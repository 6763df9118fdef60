"""Resource identifiers: `<prefix>_` + random base62, e.g. `wl_7FvkJq3mNpxT` (seed 000)."""

from __future__ import annotations

import secrets
import string

__all__ = ["new_id"]

_ALPHABET = string.ascii_letters + string.digits
DEFAULT_ID_LENGTH = 16


def new_id(prefix: str, length: int = DEFAULT_ID_LENGTH) -> str:
    """A fresh unguessable id with a readable type prefix."""
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))
