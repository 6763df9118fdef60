"""Resource identifiers: `<prefix>_` + random base62, e.g. `wl_7FvkJq3mNpxT` (seed 000)."""

from __future__ import annotations

import os
import string
import threading

__all__ = ["new_id"]

_ALPHABET = string.ascii_letters + string.digits
DEFAULT_ID_LENGTH = 16
_POOL_BYTES = 4096


class _Entropy:
    """`os.urandom` bytes handed out in slices: one getrandom() call (which releases the GIL and
    so costs a GIL hand-off under load) per ~190 ids instead of one per id. Reset in forked children."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._pos + n > len(self._buf):
                self._buf, self._pos = os.urandom(max(n, _POOL_BYTES)), 0
            out = self._buf[self._pos : self._pos + n]
            self._pos += n
            return out

    def reset(self) -> None:
        self._buf, self._pos = b"", 0


_entropy = _Entropy()
os.register_at_fork(after_in_child=_entropy.reset)


def new_id(prefix: str, length: int = DEFAULT_ID_LENGTH) -> str:
    """A fresh unguessable id with a readable type prefix.

    The base62 digits of a random integer 64 bits wider than 62**length needs, so the bias
    (about 2**-64) is negligible.
    """
    n = int.from_bytes(_entropy.take((length * 6 + 7) // 8 + 8), "big")
    chars = []
    for _ in range(length):
        n, r = divmod(n, 62)
        chars.append(_ALPHABET[r])
    return prefix + "_" + "".join(chars)
