"""The control plane's serving certificate, reloaded from its files without a restart.

Kubernetes updates a mounted Secret by swapping a symlink; cert-manager and the bootstrap Job renew
the leaf in place. Every ``interval`` seconds the files' identity (inode, mtime, size) is compared;
on a change a complete new SSLContext is built, and only if the certificate and key load and match
does it replace the current one. The listening context's SNI callback hands each new handshake the
current context (it runs for every ClientHello, with or without a server name), so open
connections keep their session and new ones get the new leaf.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

__all__ = ["DEFAULT_RELOAD_INTERVAL", "ServingCertificate"]

DEFAULT_RELOAD_INTERVAL = 5.0
log = logging.getLogger("controlplane.tls")


def _context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class ServingCertificate:
    """``listening`` goes to the server once; ``reload_if_changed`` swaps what new handshakes get."""

    def __init__(self, cert: Path, key: Path) -> None:
        self._cert, self._key = cert, key
        self._stamp = self._files()
        self.current = _context(cert, key)  # raises OSError/ssl.SSLError: the caller's start-up error
        self.listening = _context(cert, key)
        self.listening.sni_callback = self._pick
        self._task: asyncio.Task[None] | None = None

    def _files(self) -> tuple[tuple[int, int, int], ...]:
        stats = (os.stat(self._cert), os.stat(self._key))
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def _pick(self, conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
        conn.context = self.current

    def reload_if_changed(self) -> bool:
        """True when a new certificate was loaded; a missing, partial or mismatched pair is skipped."""
        try:
            stamp = self._files()
            if stamp == self._stamp:
                return False
            ctx = _context(self._cert, self._key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("serving certificate not reloaded (keeping the current one): %s", exc)
            return False
        self.current, self._stamp = ctx, stamp
        log.info("serving certificate reloaded from %s", self._cert)
        return True

    def start(self, interval: float = DEFAULT_RELOAD_INTERVAL) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(interval), name="tls-reload")

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
