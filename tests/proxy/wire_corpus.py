"""The wire corpus: raw HTTP/1.1 requests and the verdict the proxy owes each (tests/proxy/test_wire.py).

A row is the exact bytes an app sends in explicit mode (absolute-form targets); `{A}` stands for the
recording upstream's authority (`127.0.0.1:<port>`), filled in when the row is sent. A row sent as
several parts is written part by part, each its own read at the proxy. Sections follow RFC 9112.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxy.http_messages import MAX_HEAD, MAX_REQUEST_LINE

__all__ = ["ROWS", "Row"]

A = b"{A}"
BAD, TOO_LONG, TOO_LARGE = "bad_request", "uri_too_long", "request_header_too_large"
NOT_IMPLEMENTED, VERSION = "unsupported_transfer_coding", "http_version_not_supported"


@dataclass(frozen=True)
class Row:
    id: str
    make: Callable[[bytes], tuple[bytes, ...]]  # authority → the parts to write
    status: int  # 200: accepted, and answered by the upstream
    code: str | None = None  # the JSON `error` of a refusal
    body: bytes = b""  # accepted: the payload the upstream decodes

    def parts(self, authority: bytes) -> tuple[bytes, ...]:
        return self.make(authority)


def _fixed(raw: bytes) -> Callable[[bytes], tuple[bytes, ...]]:
    return lambda authority: (raw.replace(A, authority),)


def reject(id_: str, raw: bytes, status: int, code: str) -> Row:
    return Row(id_, _fixed(raw), status, code)


def accept(id_: str, raw: bytes, body: bytes = b"") -> Row:
    return Row(id_, _fixed(raw), 200, None, body)


def get(fields: bytes = b"Host: {A}\r\n", line: bytes = b"GET http://{A}/ HTTP/1.1") -> bytes:
    return line + b"\r\n" + fields + b"\r\n"


def post(fields: bytes, body: bytes, version: bytes = b"1.1") -> bytes:
    return b"POST http://{A}/upload HTTP/" + version + b"\r\nHost: {A}\r\n" + fields + b"\r\n" + body


def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked\r\n", body)


def sized_head(total: int, *, end: bool = True, step: int = 0) -> Callable[[bytes], tuple[bytes, ...]]:
    """A GET head of exactly `total` bytes (filler fields of < 4 KiB each, as nginx's 8 KiB lines allow);
    without `end` the final CRLF CRLF never comes. `step`: written in parts of that many bytes."""

    def make(authority: bytes) -> tuple[bytes, ...]:
        start = get().replace(A, authority)[:-2]  # without the final CRLF
        room = total - len(start) - (2 if end else 0)
        fill, i = [], 0
        while room > 0:
            size = min(room, 4000)
            if 0 < room - size < 16:  # leave the last filler line room for its name
                size -= 16
            name = b"X-Fill-%04d: " % i
            fill.append(name + b"a" * (size - len(name) - 2) + b"\r\n")
            room -= size
            i += 1
        raw = start + b"".join(fill) + (b"\r\n" if end else b"")
        assert len(raw) == total
        if not step:
            return (raw,)
        return tuple(raw[j : j + step] for j in range(0, len(raw), step))

    return make


def long_line(length: int) -> Callable[[bytes], tuple[bytes, ...]]:
    """A request line of exactly `length` bytes (without its CRLF)."""

    def make(authority: bytes) -> tuple[bytes, ...]:
        prefix, suffix = b"GET http://" + authority + b"/", b" HTTP/1.1"
        line = prefix + b"p" * (length - len(prefix) - len(suffix)) + suffix
        return (get(line=line).replace(A, authority),)

    return make


ROWS: list[Row] = [
    # §3 request line
    accept("valid-get", get()),
    accept("valid-query", get(line=b"GET http://{A}/a/b?c=d&e=%41 HTTP/1.1")),
    accept("one-empty-line-before-request-line", b"\r\n" + get()),
    reject("two-empty-lines-before-request-line", b"\r\n\r\n" + get(), 400, BAD),  # §2.2: one SHOULD go
    accept("http-1.0-without-host", get(b"", line=b"GET http://{A}/ HTTP/1.0")),
    accept("http-1.2-is-1.x", get(line=b"GET http://{A}/ HTTP/1.2")),
    accept("method-extension", get(line=b"VERSION-CONTROL http://{A}/ HTTP/1.1")),
    accept("method-underscore", get(line=b"M_SEARCH http://{A}/ HTTP/1.1")),
    reject("method-lower-case", get(line=b"get http://{A}/ HTTP/1.1"), 400, BAD),  # a token; nginx: 400
    reject("method-digit", get(line=b"GET1 http://{A}/ HTTP/1.1"), 400, BAD),  # a token; nginx: 400
    reject("method-dot", get(line=b"G.T http://{A}/ HTTP/1.1"), 400, BAD),  # a token; nginx: 400
    reject("extra-request-line-token", get(line=b"GET http://{A}/ HTTP/1.1 extra"), 400, BAD),
    reject("two-spaces-in-request-line", get(line=b"GET  http://{A}/ HTTP/1.1"), 400, BAD),
    reject("tab-in-request-line", get(line=b"GET\thttp://{A}/ HTTP/1.1"), 400, BAD),
    reject("leading-space-before-method", get(line=b" GET http://{A}/ HTTP/1.1"), 400, BAD),
    reject("space-in-target", get(line=b"GET http://{A}/a b HTTP/1.1"), 400, BAD),
    reject("missing-version", get(line=b"GET http://{A}/"), 400, BAD),
    reject("lower-case-version", get(line=b"GET http://{A}/ http/1.1"), 400, BAD),
    reject("two-digit-minor-version", get(line=b"GET http://{A}/ HTTP/1.10"), 400, BAD),
    reject("invalid-method-char", get(line=b"G(ET http://{A}/ HTTP/1.1"), 400, BAD),
    reject("nul-in-target", get(line=b"GET http://{A}/\x00 HTTP/1.1"), 400, BAD),
    reject("del-in-target", get(line=b"GET http://{A}/\x7f HTTP/1.1"), 400, BAD),
    reject("obs-text-in-target", get(line=b"GET http://{A}/\xe9 HTTP/1.1"), 400, BAD),
    reject("bare-cr-in-request-line", get(line=b"GET http://{A}/\r HTTP/1.1"), 400, BAD),
    reject("bare-lf-line-endings", b"GET http://{A}/ HTTP/1.1\nHost: {A}\n\n", 400, BAD),
    reject("origin-form-to-explicit-proxy", get(line=b"GET / HTTP/1.1"), 400, BAD),
    reject("empty-authority", get(line=b"GET http:/// HTTP/1.1"), 400, BAD),
    # §2.3 versions
    reject("http-2.0", get(line=b"GET http://{A}/ HTTP/2.0"), 505, VERSION),
    reject("http-3.1", get(line=b"GET http://{A}/ HTTP/3.1"), 505, VERSION),
    reject("http-0.9-with-version", get(line=b"GET http://{A}/ HTTP/0.9"), 505, VERSION),
    # §5 field syntax
    accept("obs-text-in-value", get(b"Host: {A}\r\nX-Name: caf\xe9\r\n")),
    accept("htab-and-ows-in-value", get(b"Host: {A}\r\nX-Tab:\ta\tb \t\r\n")),
    accept("empty-field-value", get(b"Host: {A}\r\nX-Empty:\r\n")),
    accept("field-name-token-chars", get(b"Host: {A}\r\nX!#$%&'*+.^_`|~9: v\r\n")),
    reject("no-host", get(b""), 400, BAD),
    reject("two-hosts", get(b"Host: {A}\r\nHost: {A}\r\n"), 400, BAD),
    reject("invalid-host", get(b"Host: a b\r\n"), 400, BAD),
    reject("host-with-userinfo", get(b"Host: user@{A}\r\n"), 400, BAD),
    reject("bare-lf-in-value", get(b"Host: {A}\r\nX-A: a\nb\r\n"), 400, BAD),
    reject("bare-cr-in-value", get(b"Host: {A}\r\nX-A: a\rb\r\n"), 400, BAD),
    reject("bare-lf-ends-field", get(b"Host: {A}\r\nX-A: a\n"), 400, BAD),
    reject("nul-in-value", get(b"Host: {A}\r\nX-A: a\x00b\r\n"), 400, BAD),
    reject("ctl-in-value", get(b"Host: {A}\r\nX-A: a\x01b\r\n"), 400, BAD),
    reject("del-in-value", get(b"Host: {A}\r\nX-A: a\x7fb\r\n"), 400, BAD),
    reject("nul-in-name", get(b"Host: {A}\r\nX\x00A: 1\r\n"), 400, BAD),
    reject("invalid-name-char", get(b"Host: {A}\r\nX(A): 1\r\n"), 400, BAD),
    reject("non-ascii-name", get(b"Host: {A}\r\nX-\xc3\xa9: 1\r\n"), 400, BAD),
    reject("space-in-name", get(b"Host: {A}\r\nX A: 1\r\n"), 400, BAD),
    reject("whitespace-before-colon", get(b"Host: {A}\r\nX-A : 1\r\n"), 400, BAD),
    reject("whitespace-before-colon-host", get(b"Host : {A}\r\n"), 400, BAD),
    reject("empty-name", get(b"Host: {A}\r\n: v\r\n"), 400, BAD),
    reject("no-colon", get(b"Host: {A}\r\nX-A 1\r\n"), 400, BAD),
    reject("obs-fold", get(b"Host: {A}\r\nX-A: 1\r\n  folded\r\n"), 400, BAD),
    reject("obs-fold-tab", get(b"Host: {A}\r\nX-A: 1\r\n\tfolded\r\n"), 400, BAD),
    reject("whitespace-before-first-field", get(b" Host: {A}\r\n"), 400, BAD),
    # §6.2, §6.3 Content-Length
    accept("content-length", post(b"Content-Length: 5\r\n", b"hello"), body=b"hello"),
    accept("content-length-zero", post(b"Content-Length: 0\r\n", b"")),
    reject("content-length-superscript", post(b"Content-Length: \xc2\xb9\r\n", b"h"), 400, BAD),
    reject("content-length-negative", post(b"Content-Length: -1\r\n", b""), 400, BAD),
    reject("content-length-plus", post(b"Content-Length: +5\r\n", b"hello"), 400, BAD),
    reject("content-length-hex", post(b"Content-Length: 0x5\r\n", b"hello"), 400, BAD),
    reject("content-length-list", post(b"Content-Length: 5, 5\r\n", b"hello"), 400, BAD),
    reject("content-length-inner-space", post(b"Content-Length: 5 5\r\n", b"hello"), 400, BAD),
    reject("content-length-overflow", post(b"Content-Length: 99999999999999999999\r\n", b""), 400, BAD),
    reject("content-length-twice-same", post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
           400, BAD),
    reject("content-length-twice-differing", post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
           400, BAD),
    reject("content-length-and-chunked", post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                                               b"0\r\n\r\n"), 400, BAD),
    reject("chunked-and-content-length", post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                                               b"0\r\n\r\n"), 400, BAD),
    # §7.6.1 (RFC 9110) Connection options never strip the framing the proxy relays, nor Host
    accept("connection-names-content-length",
           post(b"Connection: content-length\r\nContent-Length: 5\r\n", b"hello"), body=b"hello"),
    accept("connection-names-transfer-encoding",
           post(b"Connection: keep-alive, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n",
                b"5\r\nhello\r\n0\r\n\r\n"), body=b"hello"),
    accept("connection-names-host", post(b"Connection: host\r\nContent-Length: 2\r\n", b"hi"), body=b"hi"),
    # §6.1 Transfer-Encoding
    accept("chunked", chunked(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), body=b"hello world"),
    accept("chunked-upper-case-coding", post(b"Transfer-Encoding: Chunked\r\n", b"2\r\nhi\r\n0\r\n\r\n"),
           body=b"hi"),
    reject("transfer-encoding-gzip", post(b"Transfer-Encoding: gzip\r\n", b""), 501, NOT_IMPLEMENTED),
    reject("transfer-encoding-identity", post(b"Transfer-Encoding: identity\r\n", b""), 501, NOT_IMPLEMENTED),
    reject("transfer-encoding-gzip-chunked", post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
           501, NOT_IMPLEMENTED),
    reject("transfer-encoding-chunked-gzip", post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
           400, BAD),
    reject("transfer-encoding-chunked-twice",
           post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400, BAD),
    reject("transfer-encoding-chunked-chunked",
           post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"), 400, BAD),
    reject("transfer-encoding-empty", post(b"Transfer-Encoding:\r\n", b""), 400, BAD),
    reject("transfer-encoding-on-http-1.0",
           post(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", b"1.0"), 400, BAD),
    # §7.1 chunked coding
    accept("chunk-extension-name", chunked(b"5;foo\r\nhello\r\n0\r\n\r\n"), body=b"hello"),
    accept("chunk-extension-token", chunked(b"5;foo=bar;baz\r\nhello\r\n0;x=1\r\n\r\n"), body=b"hello"),
    accept("chunk-extension-quoted", chunked(b'5;foo="a \\" b;c"\r\nhello\r\n0\r\n\r\n'), body=b"hello"),
    accept("chunk-size-upper-hex-leading-zero", chunked(b"000A\r\n0123456789\r\n0\r\n\r\n"),
           body=b"0123456789"),
    accept("chunked-trailers", chunked(b"5\r\nhello\r\n0\r\nX-Trailer: t\r\nX-Sum: 1\r\n\r\n"),
           body=b"hello"),
    reject("chunk-size-0x", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-size-plus", chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-size-minus-zero", chunked(b"-0\r\n\r\n"), 400, BAD),
    reject("chunk-size-underscore", chunked(b"5_0\r\n" + b"a" * 80 + b"\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-size-leading-space", chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-size-trailing-space", chunked(b"5 \r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-size-empty", chunked(b"\r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-size-not-hex", chunked(b"g\r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-size-17-digits", chunked(b"00000000000000005\r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-data-without-crlf", chunked(b"5\r\nhelloX\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-data-too-long", chunked(b"5\r\nhello!\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-data-then-size", chunked(b"5\r\nhello0\r\n\r\n"), 400, BAD),
    reject("chunk-data-bare-lf", chunked(b"5\r\nhello\n0\r\n\r\n"), 400, BAD),
    reject("chunk-line-bare-lf", chunked(b"5\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-line-bare-cr", chunked(b"5\r\r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-extension-bare-cr", chunked(b"5;a=b\rc\r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-extension-empty", chunked(b"5;\r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-extension-no-value", chunked(b"5;foo=\r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-extension-unterminated-quote", chunked(b'5;foo="bar\r\nhello\r\n0\r\n\r\n'), 400, BAD),
    reject("chunk-extension-space-in-value", chunked(b"5;a=b c\r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-extension-ctl", chunked(b"5;a=\x01\r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("chunk-extension-too-long", chunked(b"5;a=" + b"b" * 5000 + b"\r\nhello\r\n0\r\n\r\n"), 400, BAD),
    reject("last-chunk-bare-lf", chunked(b"5\r\nhello\r\n0\n\r\n"), 400, BAD),
    reject("trailer-no-colon", chunked(b"5\r\nhello\r\n0\r\nX-T 1\r\n\r\n"), 400, BAD),
    reject("trailer-nul", chunked(b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n"), 400, BAD),
    reject("trailer-obs-fold", chunked(b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n"), 400, BAD),
    reject("trailer-bare-cr", chunked(b"5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n"), 400, BAD),
    reject("trailer-bare-lf-end", chunked(b"5\r\nhello\r\n0\r\nX-T: a\n\r\n"), 400, BAD),
    # limits: request line (414) and the whole head (431), on total bytes however they arrive
    Row("request-line-at-limit", long_line(MAX_REQUEST_LINE - 2), 200),  # with its CRLF: the limit
    Row("request-line-over-limit", long_line(MAX_REQUEST_LINE - 1), 414, TOO_LONG),
    Row("head-at-limit", sized_head(MAX_HEAD), 200),
    Row("head-over-limit-one-read", sized_head(MAX_HEAD + 1), 431, TOO_LARGE),
    Row("head-over-limit-many-reads", sized_head(MAX_HEAD + 1, step=1024), 431, TOO_LARGE),
    Row("head-unterminated-one-read", sized_head(MAX_HEAD + 1, end=False), 431, TOO_LARGE),
    Row("head-unterminated-many-reads", sized_head(MAX_HEAD + 1, end=False, step=1024), 431, TOO_LARGE),
    # the app is still writing when the 431 goes out: the proxy closes lingeringly, as nginx does
    Row("head-far-over-limit-one-read", sized_head(3 * MAX_HEAD), 431, TOO_LARGE),
]
