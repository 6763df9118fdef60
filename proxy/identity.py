"""The workload's identity: the projected service-account token, re-read when the kubelet rotates it."""

from __future__ import annotations

import os
from pathlib import Path

from proxy.errors import CredentialUnavailable

__all__ = ["TokenFile"]


class TokenFile:
    """Caches the token and re-reads it only when the file's inode, size or mtime changes.

    The kubelet rotates projected tokens by swapping a symlinked directory, so a stat per call
    (cheap; called once per credential exchange, not per request) catches every rotation.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def read(self) -> str:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp != self._stamp:
                token = self.path.read_text().strip()
                if not token:
                    raise CredentialUnavailable("the service-account token file is empty")
                self._token, self._stamp = token, stamp
        except OSError as exc:
            raise CredentialUnavailable(f"cannot read the service-account token: {exc.strerror}") from exc
        return self._token
