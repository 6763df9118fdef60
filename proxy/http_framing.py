"""Sans-IO HTTP/1.1 framing: where a message head ends and where its body ends (RFC 9112 §6 and §7).

One implementation for every reader in the proxy: the app's requests, the upstream's responses and
the control plane's replies. Nothing here does I/O: bytes go in, positions and payload come out.

- `find_head(buf, limit, error)`: the length of a complete head at the start of `buf`, or None.
- `BodyFramer`: `feed(data)` → how many bytes of `data` belong to the body (relayed in their own
  framing), `done` once the body is complete; `payload` collects the decoded bytes when asked to.
"""

from __future__ import annotations

import re

from proxy.errors import HeadTooLarge, ProxyError
from proxy.http_grammar import CHUNK_LINE, FIELD_LINE, MAX_CHUNK_LINE
from proxy.http_messages import MAX_HEAD, Body

__all__ = ["BodyFramer", "find_head", "framer"]

_MAX_TRAILERS = 16 * 1024
_LEADING_EMPTY_LINES = re.compile(rb"[\r\n]*")


def find_head(buf: bytes | bytearray, error: type[ProxyError], *, limit: int = MAX_HEAD) -> int | None:
    """Length of the head at the start of `buf` (through CRLF CRLF), None while incomplete.

    The limit holds on total bytes however they arrived; a bare LF ends nothing and is refused at
    once (it would otherwise hold the connection until the head limit)."""
    end = buf.find(b"\r\n\r\n", 0, limit + 4)
    if end >= 0:
        return end + 4  # a whole head: its parser refuses any bare CR or LF in it
    start = _LEADING_EMPTY_LINES.match(buf, 0, limit).end()  # type: ignore[union-attr]
    if buf.count(b"\n", start, limit) != buf.count(b"\r\n", start, limit):  # in place: no copy per read
        raise error("bare LF in the message head")
    if len(buf) > limit:
        raise (HeadTooLarge if error.status == 400 else error)(f"message head larger than {limit} bytes")
    return None


class BodyFramer:
    """The body of one message; subclasses per framing. `payload` is None unless collecting."""

    __slots__ = ("done", "error", "payload")

    def __init__(self, error: type[ProxyError], *, collect: bool = False) -> None:
        self.error = error
        self.done = False
        self.payload: bytearray | None = bytearray() if collect else None

    def feed(self, data: bytes | memoryview) -> int:
        """How many leading bytes of `data` are this body's (the rest is the next message)."""
        raise NotImplementedError

    def eof(self) -> None:
        """The peer closed: complete for close-delimited bodies, an error for the others."""
        if not self.done:
            raise self.error("connection closed inside a message body")


class _NoBody(BodyFramer):
    __slots__ = ()

    def __init__(self, error: type[ProxyError], *, collect: bool = False) -> None:
        super().__init__(error, collect=collect)
        self.done = True

    def feed(self, data: bytes | memoryview) -> int:
        return 0


class _Length(BodyFramer):
    __slots__ = ("remaining",)

    def __init__(self, length: int, error: type[ProxyError], *, collect: bool = False) -> None:
        super().__init__(error, collect=collect)
        self.remaining = length
        self.done = length == 0

    def feed(self, data: bytes | memoryview) -> int:
        n = min(len(data), self.remaining)
        self.remaining -= n
        if self.payload is not None:
            self.payload += data[:n]
        self.done = self.remaining == 0
        return n


class _Close(BodyFramer):
    __slots__ = ()

    def feed(self, data: bytes | memoryview) -> int:
        if self.payload is not None:
            self.payload += data
        return len(data)

    def eof(self) -> None:
        self.done = True


_SIZE, _DATA, _DATA_CRLF, _TRAILER = range(4)


class _Chunked(BodyFramer):
    """chunked-body = *chunk last-chunk trailer-section CRLF, validated byte for byte as it streams."""

    __slots__ = ("_line", "_need", "_state", "_trailers")

    def __init__(self, error: type[ProxyError], *, collect: bool = False) -> None:
        super().__init__(error, collect=collect)
        self._state = _SIZE
        self._line = bytearray()  # a size or trailer line split across reads
        self._need = 0  # chunk-data bytes still due, or CRLF bytes still due after them
        self._trailers = 0

    def feed(self, data: bytes | memoryview) -> int:
        if isinstance(data, memoryview):
            data = data.tobytes()  # one copy per read; lines are then found in place
        i, n = 0, len(data)
        while i < n and not self.done:
            state = self._state
            if state == _DATA:
                take = min(self._need, n - i)
                if self.payload is not None:
                    self.payload += data[i : i + take]
                i += take
                self._need -= take
                if self._need == 0:
                    self._state, self._need = _DATA_CRLF, 2
            elif state == _DATA_CRLF:
                expected = b"\r\n"[2 - self._need]
                if data[i] != expected:
                    raise self.error("chunk data not followed by CRLF")
                i += 1
                self._need -= 1
                if self._need == 0:
                    self._state = _SIZE
            else:
                i = self._line_byte(data, i, n)
        return i

    def _line_byte(self, data: bytes, i: int, n: int) -> int:
        """Accumulate a size or trailer line; act on it at its CRLF. Returns the new position.

        The LF is searched in place, bounded by the line limit: never a copy of the rest of the read
        (a read full of one-byte chunks would otherwise cost time quadratic in its size)."""
        limit = MAX_CHUNK_LINE if self._state == _SIZE else _MAX_TRAILERS - self._trailers
        stop = min(n, i + limit + 1)
        end = data.find(b"\n", i, stop)
        piece = data[i:stop] if end < 0 else data[i : end + 1]
        self._line += piece
        if len(self._line) > limit:
            raise self.error("chunk-size or trailer line too long")
        if end < 0:
            return stop  # == n: a line longer than the rest of the read would have raised above
        line = bytes(self._line)
        self._line.clear()
        if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
            raise self.error("bare CR or LF in chunked framing")
        line = line[:-2]
        if self._state == _SIZE:
            m = CHUNK_LINE.fullmatch(line)
            if m is None:
                raise self.error(f"invalid chunk-size line {line[:20]!r}")
            size = int(m.group(1), 16)
            if size:
                self._state, self._need = _DATA, size
            else:
                self._state = _TRAILER
        elif not line:
            self.done = True
        else:
            self._trailers += len(line) + 2
            if FIELD_LINE.fullmatch(line) is None:
                raise self.error(f"malformed trailer field {line[:40]!r}")
        return i + len(piece)


def framer(kind: int, length: int, error: type[ProxyError], *, collect: bool = False) -> BodyFramer:
    """The framer for a parsed message's body (`Body.*` and its Content-Length)."""
    if kind == Body.LENGTH:
        return _Length(length, error, collect=collect)
    if kind == Body.CHUNKED:
        return _Chunked(error, collect=collect)
    if kind == Body.CLOSE:
        return _Close(error, collect=collect)
    return _NoBody(error, collect=collect) if collect else _NO_BODY


_NO_BODY = _NoBody(ProxyError)  # stateless: shared by every bodiless message
