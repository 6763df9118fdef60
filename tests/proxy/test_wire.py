"""Strict HTTP/1.1 parsing on the wire: the corpus (tests/proxy/wire_corpus.py) through a real proxy.

Every row is written as raw bytes to an in-process proxy in explicit mode, towards a raw upstream
that records every byte it receives. A malformed row must be answered with its status and a JSON
body with a stable `error` code, and nothing may reach the upstream (no connection, or one that
received zero bytes): not the head, not the credential of a governed route. A valid row must reach
the upstream intact, read there by an independent parser (h11): its target, its fields, its body
framing byte for byte (chunk extensions and trailers included) and its payload.

The same rows then go to a real nginx when one is installed: wherever nginx refuses a request
without contacting its upstream, Sesame must refuse it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import h11
import pytest

from proxy.http_messages import HOP_BY_HOP, MAX_HEAD
from tests.proxy.conftest import route
from tests.proxy.rawhttp import RawServer
from tests.proxy.wire_corpus import ROWS, Row

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
_TIMEOUT = 10.0


@dataclass
class Seen:
    """One request as h11 read it at the upstream."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)


class Recorder:
    """The upstream: every byte of every connection; each request parsed by h11 and answered 200."""

    def __init__(self) -> None:
        self.received: list[bytearray] = []
        self.requests: list[Seen] = []
        self.errors: list[str] = []
        self.server = RawServer(self._handle)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def total(self) -> int:
        return sum(len(r) for r in self.received)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = bytearray()
        self.received.append(raw)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=2 * MAX_HEAD)
        seen: Seen | None = None
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(reader.read(65536), _TIMEOUT)
                    raw += data
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    seen = Seen(event.method, event.target, list(event.headers))
                elif isinstance(event, h11.Data):
                    seen.body += event.data  # type: ignore[union-attr]
                elif isinstance(event, h11.EndOfMessage):
                    seen.trailers = list(event.headers)  # type: ignore[union-attr]
                    self.requests.append(seen)  # type: ignore[arg-type]
                    writer.write(_OK)
                    await writer.drain()
                    return
                else:  # ConnectionClosed
                    return
        except h11.RemoteProtocolError as exc:
            self.errors.append(str(exc))
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except TimeoutError:
            self.errors.append("the proxy sent an incomplete request")


@dataclass
class Reply:
    status: int | None  # None: the connection closed or stalled without a response
    headers: dict[str, str]
    body: bytes


async def send(address: tuple[str, int], parts: tuple[bytes, ...], *, wait: float = _TIMEOUT) -> Reply:
    """Write the parts (each its own read at the server) and read one Content-Length response."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        for i, part in enumerate(parts):
            writer.write(part)
            await writer.drain()
            if i + 1 < len(parts):
                await asyncio.sleep(0.002)
    except ConnectionError:
        pass  # refused mid-way: the answer was written before the close
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), wait)
        return Reply(int(lines[0].split(" ")[1]), headers, body)
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
        return Reply(None, {}, b"")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _sent_fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    head = raw.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[0]
    fields = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields.append((name, value.strip(b" \t")))
    return fields


async def _settle() -> None:
    """Give a dial the proxy should never have made the time to show up at the upstream."""
    await asyncio.sleep(0.05)


def assert_refused(row: Row, reply: Reply) -> None:
    assert reply.status == row.status, (row.id, reply)
    assert reply.headers.get("content-type") == "application/json"
    assert reply.headers.get("connection") == "close"  # the framing cannot be trusted: no next request
    doc = json.loads(reply.body)
    assert doc["error"] == row.code and isinstance(doc["message"], str) and doc["message"]


def assert_intact(row: Row, raw: bytes, authority: bytes, recorder: Recorder,
                  credential: bytes | None) -> None:
    assert not recorder.errors, recorder.errors
    assert len(recorder.requests) == 1
    seen = recorder.requests[0]
    line = raw.lstrip(b"\r\n").split(b"\r\n", 1)[0]
    method, target, _ = line.split(b" ")
    assert seen.method == method
    assert seen.target == target.removeprefix(b"http://" + authority)  # absolute-form → origin-form
    headers = [(n.lower(), v) for n, v in seen.headers]
    upstream_head = bytes(recorder.received[0]).split(b"\r\n\r\n", 1)[0] + b"\r\n"
    for name, value in _sent_fields(raw):  # each end-to-end field as sent, name case included
        if name.lower().decode() not in HOP_BY_HOP:
            assert b"\r\n" + name + b": " + value + b"\r\n" in upstream_head, name
    assert (b"host", authority) in headers  # set from the target's authority, also for HTTP/1.0
    assert ((b"authorization", b"Bearer " + credential) in headers) if credential else not any(
        n == b"authorization" for n, _ in headers
    )
    assert seen.body == row.body
    sent_body = raw.lstrip(b"\r\n").split(b"\r\n\r\n", 1)[1]
    assert bytes(recorder.received[0]).endswith(sent_body)  # relayed in the framing it arrived in


@pytest.fixture
async def recorder():
    rec = Recorder()
    await rec.server.start()
    yield rec
    await rec.server.close()


_PARAMS = [pytest.param(r, id=r.id) for r in ROWS]


@pytest.mark.parametrize("governed", [False, True], ids=["ungoverned", "governed"])
@pytest.mark.parametrize("row", _PARAMS)
async def test_wire_corpus(row: Row, governed: bool, cp, start_proxy, recorder: Recorder) -> None:
    authority = b"127.0.0.1:%d" % recorder.port
    if governed:
        cp.routes = [route("wire", "127.0.0.1", recorder.port, scheme="http")]
    proxy = await start_proxy()
    parts = row.parts(authority)
    reply = await send(proxy.listener.address, parts)
    if row.code is None:
        assert reply.status == 200 and reply.body == b"ok", reply
        assert_intact(row, b"".join(parts), authority, recorder, b"token-aud-wire-1" if governed else None)
        return
    assert_refused(row, reply)
    await _settle()
    assert recorder.total == 0, bytes(recorder.received[0][:200])
    assert not cp.exchanges  # nor was a credential fetched for it


# nginx: the same rows, the same upstream


_NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_header_timeout 1s;
    client_body_timeout 1s;
    # Sesame's limits where nginx can express them: a request line of 8 KiB (414); nginx also caps
    # each field line at one buffer, and the corpus keeps its filler lines under 4 KiB.
    client_header_buffer_size 1k;
    large_client_header_buffers 16 8k;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def nginx(tmp_path: Path, recorder: Recorder):
    binary = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin")
    if binary is None:
        pytest.skip("nginx is not installed (.ci/run installs it)")
    port = _free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(dir=tmp_path, port=port, upstream=recorder.port))
    proc = await asyncio.create_subprocess_exec(
        binary, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                if proc.returncode is not None:
                    pytest.fail("nginx exited: " + (tmp_path / "error.log").read_text()[-2000:])
                await asyncio.sleep(0.05)
        else:
            pytest.fail("nginx did not start listening")
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def _verdict(address: tuple[str, int], parts: tuple[bytes, ...],
                   recorder: Recorder) -> tuple[Reply, int]:
    """The reply, and how many bytes reached the upstream meanwhile."""
    before = recorder.total
    reply = await send(address, parts, wait=3)
    await _settle()
    return reply, recorder.total - before


async def test_sesame_refuses_whatever_nginx_refuses(nginx, cp, start_proxy, recorder: Recorder) -> None:
    """Each row to nginx, then to Sesame: an nginx refusal (4xx/5xx, nothing upstream) is a Sesame refusal.

    Rows where the two differ otherwise (Sesame stricter, or another status) are printed (`-s`)."""
    proxy = await start_proxy()
    authority = b"127.0.0.1:%d" % recorder.port
    differences, lenient = [], []
    for row in ROWS:
        parts = row.parts(authority)
        theirs, their_bytes = await _verdict(nginx, parts, recorder)
        ours, our_bytes = await _verdict(proxy.listener.address, parts, recorder)
        verdicts = (f"{row.id}: nginx {theirs.status} ({their_bytes} bytes upstream), "
                    f"sesame {ours.status} ({our_bytes} bytes upstream)")
        if theirs.status is not None and theirs.status >= 400 and their_bytes == 0:
            refused = ours.status is not None and ours.status >= 400 and our_bytes == 0
            if not refused or json.loads(ours.body).get("error") != row.code:
                lenient.append(row.id)
        if (theirs.status, their_bytes == 0) != (ours.status, our_bytes == 0):
            differences.append(verdicts)
    print("\n".join(["rows where nginx and Sesame differ:", *differences]))
    assert lenient == [], differences  # where nginx refuses, Sesame refuses too
