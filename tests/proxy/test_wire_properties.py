"""Properties of the sans-IO HTTP/1.1 parsers (hypothesis): no input makes them fail but with a
protocol error, serialise∘parse is the identity on valid heads, and chunked framing does not depend
on how the bytes are split across reads."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.errors import BadRequest, ProxyError, UpstreamProtocolError
from proxy.http_framing import find_head, framer
from proxy.http_grammar import MAX_CHUNK_LINE
from proxy.http_messages import HOP_BY_HOP, Body, parse_request_head, parse_response_head, serialize_head

_SETTINGS = settings(max_examples=200, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow])
_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SPECIAL = HOP_BY_HOP | {"host", "content-length", "transfer-encoding", "expect", "proxy-connection"}

# the grammar, as generators
token = st.text(_TCHAR, min_size=1, max_size=12)
method = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_", min_size=1, max_size=10)
field_name = token.filter(lambda n: n.lower() not in _SPECIAL)
_vchar = "".join(map(chr, [*range(0x21, 0x7F), *range(0x80, 0x100)]))  # field-vchar: VCHAR / obs-text
_word = st.text(_vchar, min_size=1, max_size=8)
field_value = st.lists(_word, max_size=4).map(" ".join) | st.builds(
    lambda a, ws, b: a + ws + b, _word, st.sampled_from([" ", "\t", " \t "]), _word)
segment = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@%", max_size=8)
origin_target = st.builds(lambda segs, q: "/" + "/".join(segs) + (f"?{q}" if q else ""),
                          st.lists(segment, max_size=4), st.none() | segment)
_label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
host = st.builds(lambda labels, port: ".".join(labels) + (f":{port}" if port is not None else ""),
                 st.lists(_label, min_size=1, max_size=3), st.none() | st.integers(1, 65535))
fields = st.lists(st.tuples(field_name, field_value), max_size=12)
ows = st.sampled_from(["", " ", "\t", "  "])


@st.composite
def request_heads(draw) -> tuple[bytes, str, list[tuple[str, str]]]:
    """A valid request head, written with optional whitespace around values → (raw, start line, fields)."""
    start = f"{draw(method)} {draw(origin_target)} HTTP/1.{draw(st.sampled_from('01'))}"
    sent = [("Host", draw(host)), *draw(fields)]
    order = draw(st.permutations(range(len(sent))))
    sent = [sent[i] for i in order]
    raw = start + "\r\n" + "".join(f"{n}:{draw(ows)}{v}{draw(ows)}\r\n" for n, v in sent) + "\r\n"
    return raw.encode("latin-1"), start, sent


@st.composite
def chunked_bodies(draw) -> tuple[bytes, bytes]:
    """A valid chunked body (extensions, BWS, trailers) → (encoded, payload)."""
    chunks = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=6))
    ext = st.lists(st.builds(lambda b1, n, v: f"{b1};{n}" + (f"={v}" if v else ""), ows, token,
                             st.none() | token | st.just('"q \\" s"')), max_size=2).map("".join)
    out = bytearray()
    for chunk in chunks:
        size = f"{len(chunk):{draw(st.sampled_from(['x', 'X', '04x']))}}"
        out += f"{size}{draw(ext)}\r\n".encode() + chunk + b"\r\n"
    out += f"0{draw(ext)}\r\n".encode()
    for name, value in draw(st.lists(st.tuples(field_name, field_value), max_size=3)):
        out += f"{name}: {value}\r\n".encode("latin-1")
    return bytes(out + b"\r\n"), b"".join(chunks)


def _mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Valid bytes with a few bytes replaced, inserted or removed: close to the grammar's edges."""
    special = st.sampled_from(
        [b"\r", b"\n", b"\x00", b" ", b"\t", b":", b";", b'"', b"\\", b"\xff", b"0", b"\r\n"])

    @st.composite
    def mutate(draw) -> bytes:
        data = bytearray(draw(valid))
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(data)))
            kind = draw(st.sampled_from(["insert", "replace", "delete"]))
            piece = draw(special | st.binary(min_size=1, max_size=2))
            if kind == "insert" or i == len(data):
                data[i:i] = piece
            elif kind == "replace":
                data[i : i + len(piece)] = piece
            else:
                del data[i]
        return bytes(data)

    return mutate()


any_head = st.binary(max_size=300) | _mutated(request_heads().map(lambda h: h[0]))
any_response_head = st.binary(max_size=300) | _mutated(
    request_heads().map(lambda h: b"HTTP/1.1 200 OK" + h[0][h[0].index(b"\r\n"):]))
any_chunked = st.binary(max_size=300) | _mutated(chunked_bodies().map(lambda c: c[0]))


def _splits(data: bytes, draw_cuts: list[int]) -> list[bytes]:
    cuts = sorted({c % (len(data) + 1) for c in draw_cuts})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# never anything but a protocol error


@_SETTINGS
@given(any_head)
def test_request_parser_raises_only_protocol_errors(raw: bytes) -> None:
    try:
        parse_request_head(raw)
    except ProxyError:
        pass


@_SETTINGS
@given(any_response_head, st.sampled_from(["GET", "HEAD", "POST"]))
def test_response_parser_raises_only_protocol_errors(raw: bytes, method: str) -> None:
    try:
        parse_response_head(raw, method)
    except ProxyError as exc:
        assert isinstance(exc, UpstreamProtocolError)  # 502 for whatever the upstream got wrong


@_SETTINGS
@given(any_head, st.integers(1, 400))
def test_find_head_raises_only_protocol_errors(raw: bytes, limit: int) -> None:
    try:
        end = find_head(raw, BadRequest, limit=limit)
    except ProxyError:
        return
    assert end is None or (raw[end - 4 : end] == b"\r\n\r\n" and end <= limit + 4)


@_SETTINGS
@given(any_chunked, st.lists(st.integers(0, 400), max_size=8))
def test_chunked_framer_raises_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    body = framer(Body.CHUNKED, 0, BadRequest, collect=True)
    try:
        for piece in _splits(data, cuts):
            if body.done:
                break
            body.feed(piece)
        body.eof()
    except ProxyError:
        pass


# serialise ∘ parse


@_SETTINGS
@given(request_heads())
def test_serialize_parse_is_identity_on_valid_request_heads(head: tuple[bytes, str, list]) -> None:
    raw, start, sent = head
    req = parse_request_head(raw)
    assert (req.method + " " + req.target + " " + req.version) == start
    assert req.headers == sent  # names as sent, values without their surrounding whitespace
    canonical = serialize_head(start, req.headers)
    written = "".join(f"{n}: {v}\r\n" for n, v in sent)
    assert canonical == (start + "\r\n" + written + "\r\n").encode("latin-1")
    again = parse_request_head(canonical)
    assert (again.method, again.target, again.version, again.headers) == (req.method, req.target, req.version,
                                                                          req.headers)
    assert serialize_head(start, again.headers) == canonical


@pytest.mark.parametrize("status", [b"000", b"099", b"600", b"999", b"20", b"2000", b"-10", b"+20"])
def test_status_codes_outside_100_to_599_are_refused(status: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        parse_response_head(b"HTTP/1.1 " + status + b" X\r\nContent-Length: 0\r\n\r\n", "GET")


@_SETTINGS
@given(st.integers(100, 599).filter(lambda s: s != 101), st.text(_TCHAR + " ", max_size=20), fields)
def test_serialize_parse_is_identity_on_valid_response_heads(status: int, reason: str,
                                                             sent: list[tuple[str, str]]) -> None:
    start = f"HTTP/1.1 {status} {reason}"
    raw = serialize_head(start, sent)
    resp = parse_response_head(raw, "GET")
    assert (resp.status, resp.reason, resp.headers) == (status, reason, sent)
    assert serialize_head(f"HTTP/1.1 {resp.status} {resp.reason}", resp.headers) == raw


# chunked framing, however the bytes arrive


@_SETTINGS
@given(chunked_bodies(), st.lists(st.integers(0, 2000), max_size=12), st.binary(max_size=8))
def test_chunked_framer_payload_does_not_depend_on_splits(body: tuple[bytes, bytes], cuts: list[int],
                                                          after: bytes) -> None:
    encoded, payload = body
    data = encoded + after  # the next message's bytes follow the body on the same connection
    framed = framer(Body.CHUNKED, 0, BadRequest, collect=True)
    consumed = 0
    for piece in _splits(data, cuts):
        if framed.done:
            break
        n = framed.feed(piece)
        assert n == len(piece) or framed.done  # only the end of the body stops a read short
        consumed += n
    assert framed.done
    assert consumed == len(encoded)  # exactly the body: not one byte of what follows
    assert framed.payload == payload


@_SETTINGS
@given(any_chunked, st.lists(st.integers(0, 400), max_size=8))
def test_chunked_framer_verdict_does_not_depend_on_splits(data: bytes, cuts: list[int]) -> None:
    """Valid or not, one read or many: the same payload, the same length, the same error class."""

    def run(pieces: list[bytes]) -> tuple[object, ...]:
        framed = framer(Body.CHUNKED, 0, BadRequest, collect=True)
        consumed = 0
        try:
            for piece in pieces:
                if framed.done:
                    break
                consumed += framed.feed(piece)
        except ProxyError as exc:
            return ("error", type(exc))
        return ("ok", framed.done, consumed, bytes(framed.payload or b""))

    whole = run([data])
    split = run(_splits(data, cuts))
    if whole[0] == "ok" and not whole[1]:  # incomplete: a split run may not have seen an error yet either
        assert split[0] == "ok" and split[2:] == whole[2:]
    else:
        assert split == whole


@_SETTINGS
@given(st.sampled_from([MAX_CHUNK_LINE - 10, MAX_CHUNK_LINE + 10, 3 * MAX_CHUNK_LINE]),
       st.lists(st.integers(0, 20000), max_size=6))
def test_trailer_lines_longer_than_a_chunk_line_are_framed_whatever_the_splits(length: int,
                                                                               cuts: list[int]) -> None:
    """Trailer lines have their own budget (16 KiB in all), larger than a chunk-size line's."""
    encoded = b"5\r\nhello\r\n0\r\nX-Long: " + b"v" * length + b"\r\nX-After: 1\r\n\r\n"
    data = encoded + b"GET / HTTP/1.1\r\n"
    framed = framer(Body.CHUNKED, 0, BadRequest, collect=True)
    consumed = 0
    for piece in _splits(data, cuts):
        if framed.done:
            break
        consumed += framed.feed(piece)
    assert framed.done and consumed == len(encoded) and framed.payload == b"hello"


def test_chunk_size_line_limit() -> None:
    at_limit = b"5;x=" + b"a" * (MAX_CHUNK_LINE - 6) + b"\r\nhello\r\n0\r\n\r\n"
    framed = framer(Body.CHUNKED, 0, BadRequest, collect=True)
    assert framed.feed(at_limit) == len(at_limit) and framed.payload == b"hello"
    with pytest.raises(BadRequest):
        framer(Body.CHUNKED, 0, BadRequest).feed(b"5;x=" + b"a" * (MAX_CHUNK_LINE - 5) + b"\r\nhello\r\n")
