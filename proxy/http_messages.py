"""HTTP/1.1 message heads: strict parsing (RFC 9112 §2 to §7), framing decisions and serialisation.

Requests that nginx refuses are refused here too, each with the status nginx gives (400, 414, 431,
501, 505); a response head the upstream gets wrong is `bad_upstream_response` (502).
"""

from __future__ import annotations

import json
from http import HTTPStatus

from proxy.errors import (
    BadRequest,
    HeadTooLarge,
    ProxyError,
    UnsupportedTransferCoding,
    UpstreamProtocolError,
    URITooLong,
    VersionNotSupported,
)
from proxy.http_grammar import AUTHORITY, FIELD_CHARS, REQUEST_LINE, STATUS_LINE, TCHARS

__all__ = [
    "HOP_BY_HOP",
    "MAX_HEAD",
    "MAX_REQUEST_LINE",
    "Body",
    "Request",
    "Response",
    "error_response",
    "parse_request_head",
    "parse_response_head",
    "serialize_head",
    "split_authority",
]

MAX_HEAD = 64 * 1024  # request line + fields, in total bytes, however many reads they took
MAX_REQUEST_LINE = 8 * 1024  # request line and its CRLF
_MAX_FIELDS = 200
# Hop-by-hop fields (RFC 9110 §7.6.1) plus the proxy's own; Transfer-Encoding is kept because bodies
# are relayed in the framing they arrived in.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
     "upgrade"}
)
_FRAMING = frozenset(
    {"connection", "proxy-connection", "transfer-encoding", "content-length", "upgrade", "expect"}
)
_CONNECTION_OPTIONS = frozenset({"close", "keep-alive", "upgrade"})
# A translation that maps every byte a field section may hold (FIELD_CHARS, plus CR and LF, its
# separators: bare ones are refused before) to "a" and every other byte to NUL: one C pass, no
# per-call table, then a memchr for NUL.
_FIELD_BYTE_CHECK = bytes(0x61 if b in FIELD_CHARS + b"\r\n" else 0 for b in range(256))
_HOSTS: dict[str, bool] = {}  # Host values seen → valid authority
_TCHARS_TEXT = TCHARS.decode("ascii")
_NAMES: dict[str, str] = {}  # field names seen, validated → lower-cased
_NAMES_LIMIT = 1024
# Never dropped because Connection names them: the body is relayed in the framing these fields give,
# so a request (or response) stripped of them would be framed differently by the next hop (smuggling).
_NEVER_NOMINATED = frozenset({"content-length", "transfer-encoding", "host"})


class Body:
    """Message body framing."""

    NONE, LENGTH, CHUNKED, CLOSE = range(4)


class Request:
    __slots__ = ("body", "expect_continue", "headers", "host", "keep_alive", "length", "method", "target",
                 "upgrade", "version")

    def __init__(self, method: str, target: str, version: str, headers: list[tuple[str, str]]) -> None:
        self.method, self.target, self.version, self.headers = method, target, version, headers
        self.body, self.length, self.keep_alive = Body.NONE, 0, True
        self.expect_continue, self.upgrade, self.host = False, "", ""


class Response:
    __slots__ = ("body", "headers", "keep_alive", "length", "reason", "status", "upgrade", "version")

    def __init__(self, version: str, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        self.version, self.status, self.reason, self.headers = version, status, reason, headers
        self.body, self.length, self.keep_alive, self.upgrade = Body.NONE, 0, True, ""


def _split(raw: bytes, error: type[ProxyError]) -> tuple[bytes, bytes]:
    """(start line, field section without the final CRLF CRLF); a bare CR or LF anywhere is refused."""
    raw = raw.lstrip(b"\r\n")  # RFC 9112 §2.2: empty lines before the start line may be ignored
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:
        raise error("bare CR or LF in the message head")
    end = raw.find(b"\r\n")
    return raw[:end], raw[end + 2 : -4]


def _field_name(name: str) -> str | None:
    """The lower-cased name when `name` is a token (RFC 9110 §5.1), else None; names repeat from one
    message to the next, so the answer is remembered (a bounded table)."""
    lower = _NAMES.get(name)
    if lower is None and name and not name.strip(_TCHARS_TEXT):
        if len(_NAMES) >= _NAMES_LIMIT:
            _NAMES.clear()
        lower = _NAMES[name] = name.lower()
    return lower


def _valid_host(value: str) -> bool:
    """Host is an authority (RFC 9112 §3.2); remembered per value (a bounded table)."""
    valid = _HOSTS.get(value)
    if valid is None:
        if len(_HOSTS) >= _NAMES_LIMIT:
            _HOSTS.clear()
        valid = _HOSTS[value] = AUTHORITY.fullmatch(value.encode("latin-1")) is not None
    return valid


def _fields(block: bytes, error: type[ProxyError]) -> tuple[list[str], list[tuple[str, str]]]:
    """→ (lower-cased names, (name, value) as sent); obs-fold, bad names and CTLs are refused."""
    names: list[str] = []
    headers: list[tuple[str, str]] = []
    if not block:
        return names, headers
    if b"\0" in block.translate(_FIELD_BYTE_CHECK):  # a control character somewhere
        bad = next(line for line in block.split(b"\r\n") if line.translate(None, FIELD_CHARS))
        raise error(f"control character in header field {bad[:40]!r}")
    lines = block.decode("latin-1").split("\r\n")
    if len(lines) > _MAX_FIELDS:
        raise error(f"more than {_MAX_FIELDS} header fields")
    for line in lines:
        name, colon, value = line.partition(":")
        # field-name = token: so no whitespace before the colon and no obs-fold
        lower = _field_name(name) if colon else None
        if lower is None:
            raise error(f"malformed header field {line[:40]!r}")
        names.append(lower)
        headers.append((name, value.strip(" \t")))
    return names, headers


def _content_length(value: str, error: type[ProxyError]) -> int:
    # Content-Length = 1*DIGIT, ASCII digits only ("¹".isdigit() is True in Python).
    if not value or len(value) > 18 or not value.isascii() or not value.isdigit():
        raise error(f"invalid Content-Length {value[:20]!r}")
    return int(value)


def _frame(msg: Request | Response, names: list[str], headers: list[tuple[str, str]],
           error: type[ProxyError]) -> None:
    """Set framing, keep-alive, upgrade and Host from the fields; strip hop-by-hop fields."""
    conn_tokens: set[str] = set()
    codings: list[str] | None = None
    length: str | None = None
    kept = headers
    if not _FRAMING.isdisjoint(names):
        for i, lname in enumerate(names):
            if lname not in _FRAMING:
                continue
            value = headers[i][1]
            if lname == "connection" or lname == "proxy-connection":
                conn_tokens.update([t.strip().lower() for t in value.split(",")])
            elif lname == "content-length":
                if length is not None:
                    raise error("more than one Content-Length")
                length = value
            elif lname == "transfer-encoding":
                codings = (codings or []) + [t.strip().lower() for t in value.split(",")]
            elif lname == "upgrade":
                msg.upgrade = value
            elif lname == "expect" and isinstance(msg, Request):
                msg.expect_continue = value.lower() == "100-continue"
    named = conn_tokens - _CONNECTION_OPTIONS - _NEVER_NOMINATED if conn_tokens else conn_tokens
    if named or not HOP_BY_HOP.isdisjoint(names):  # Connection may name more hop-by-hop fields
        drop = HOP_BY_HOP | named
        kept = [header for lname, header in zip(names, headers, strict=True) if lname not in drop]
    msg.headers = kept
    if "upgrade" not in conn_tokens:
        msg.upgrade = ""
    msg.keep_alive = msg.version == "HTTP/1.1" and "close" not in conn_tokens
    if isinstance(msg, Request):
        hosts = names.count("host")
        if hosts == 1:
            msg.host = headers[names.index("host")][1]
        if hosts > 1 or (hosts == 0 and msg.version == "HTTP/1.1"):
            raise BadRequest("an HTTP/1.1 request needs exactly one Host field")
        if hosts and not _valid_host(msg.host):
            raise BadRequest(f"invalid Host {msg.host[:60]!r}")
    if codings is not None:
        if length is not None:
            raise error("both Transfer-Encoding and Content-Length")
        if msg.version != "HTTP/1.1":  # RFC 9112 §6.1: the framing of such a message is faulty
            raise error("Transfer-Encoding in an HTTP/1.0 message")
        chunked = codings.count("chunked")
        if "" in codings or chunked > 1 or (chunked and codings[-1] != "chunked"):
            raise error("malformed Transfer-Encoding")
        if isinstance(msg, Request):
            if codings != ["chunked"]:
                raise UnsupportedTransferCoding(f"unsupported Transfer-Encoding {', '.join(codings)[:40]!r}")
            msg.body = Body.CHUNKED
        else:
            msg.body = Body.CHUNKED if codings[-1] == "chunked" else Body.CLOSE
    elif length is not None:
        msg.length = _content_length(length, error)
        msg.body = Body.LENGTH if msg.length else Body.NONE
    elif isinstance(msg, Response):
        msg.body = Body.CLOSE


def parse_request_head(raw: bytes) -> Request:
    """A request head (ending in CRLF CRLF) → Request; BadRequest and kin on anything malformed."""
    if len(raw) > MAX_HEAD:
        raise HeadTooLarge(f"request head larger than {MAX_HEAD} bytes")
    line, block = _split(raw, BadRequest)
    if len(line) + 2 > MAX_REQUEST_LINE:  # with its CRLF, as nginx counts (414 from 8,191 bytes on)
        raise URITooLong(f"request line (with its CRLF) longer than {MAX_REQUEST_LINE} bytes")
    m = REQUEST_LINE.fullmatch(line)
    if m is None:
        raise BadRequest(f"malformed request line {line[:60]!r}")
    method, target, major, minor = m.groups()
    if major != b"1":
        raise VersionNotSupported(f"HTTP/{major.decode()}.{minor.decode()} is not supported")
    version = "HTTP/1.0" if minor == b"0" else "HTTP/1.1"
    names, headers = _fields(block, BadRequest)
    req = Request(method.decode("ascii"), target.decode("ascii"), version, headers)
    _frame(req, names, headers, BadRequest)
    return req


def parse_response_head(raw: bytes, method: str) -> Response:
    """A response head → Response; UpstreamProtocolError (502) on anything malformed."""
    if len(raw) > MAX_HEAD:
        raise UpstreamProtocolError(f"response head larger than {MAX_HEAD} bytes")
    line, block = _split(raw, UpstreamProtocolError)
    m = STATUS_LINE.fullmatch(line)
    if m is None or m.group(1) != b"1":
        raise UpstreamProtocolError(f"malformed status line {line[:60]!r}")
    version = "HTTP/1.0" if m.group(2) == b"0" else "HTTP/1.1"
    names, headers = _fields(block, UpstreamProtocolError)
    resp = Response(version, int(m.group(3)), (m.group(4) or b"").decode("latin-1"), headers)
    _frame(resp, names, headers, UpstreamProtocolError)
    if method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
        resp.body = Body.NONE
    return resp


def split_authority(authority: str, default_port: int) -> tuple[str, int]:
    """`host[:port]` (RFC 3986 authority) → (lower-cased host without a final dot, port)."""
    m = AUTHORITY.fullmatch(authority.encode("latin-1", "replace"))
    if m is None or (m.group(2) is not None and not 0 < int(m.group(2)) < 65536):
        raise BadRequest(f"invalid authority {authority[:60]!r}")
    host = m.group(1).decode("ascii")
    if host.startswith("["):
        host = host[1:-1]
    port = int(m.group(2)) if m.group(2) else default_port
    return host.lower().rstrip("."), port


def serialize_head(start_line: str, headers: list[tuple[str, str]], extra: str = "") -> bytes:
    lines = [start_line]
    lines.extend([f"{n}: {v}" for n, v in headers])
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode("latin-1")


def error_response(exc: ProxyError, *, keep_alive: bool) -> bytes:
    """The JSON error reply the app gets for `exc`."""
    body = json.dumps(exc.body()).encode()
    phrase = HTTPStatus(exc.status).phrase
    head = (
        f"HTTP/1.1 {exc.status} {phrase}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        + ("" if keep_alive else "Connection: close\r\n")
        + "\r\n"
    )
    return head.encode() + body
