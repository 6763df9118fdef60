"""Resource identifiers: `<prefix>_` + random base62, e.g. `wl_7FvkJq3mNpxT` (seed 000)."""

from __future__ import annotations

import os
import string

__all__ = ["new_id"]

_ALPHABET = string.ascii_letters + string.digits
DEFAULT_ID_LENGTH = 16


def new_id(prefix: str, length: int = DEFAULT_ID_LENGTH) -> str:
    """A fresh unguessable id with a readable type prefix.

    One `os.urandom` read per id (not one CSPRNG call per character): the base62 digits of a random
    integer 64 bits wider than 62**length needs, so the bias (about 2**-64) is negligible.
    """
    n = int.from_bytes(os.urandom((length * 6 + 7) // 8 + 8), "big")
    chars = []
    for _ in range(length):
        n, r = divmod(n, 62)
        chars.append(_ALPHABET[r])
    return prefix + "_" + "".join(chars)
