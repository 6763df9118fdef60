"""HTTP/2 and gRPC through the proxy (explicit mode) with real peers: grpcio client and server, httpx
with http2=True, curl --http2. Each governed stream carries the credential (overwriting the app's
value); ungoverned HTTP/2 is tunnelled untouched; one stream's failure leaves the others running."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import httpx
import pytest

from devkit.upstream import server_context
from tests.proxy.conftest import API_KEY, client_ssl, proxy_url, route
from tests.proxy.grpc_peers import SERVICE, GrpcServer, grpc_frame, method

TOKEN = "token-aud-api-1"  # what the control-plane double issues first for audience aud-api
MINE = [("authorization", "Bearer mine")]  # the app's own value


@pytest.fixture
def grpc_tls(pki):
    with GrpcServer(pki.server_cert, pki.server_key) as server:
        yield server


@pytest.fixture
def grpc_plain():
    with GrpcServer() as server:
        yield server


def _channel(proxy, target: str, *, trust: bytes | None, **options) -> grpc.Channel:
    opts = [("grpc.http_proxy", proxy_url(proxy)), ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20), ("grpc.enable_retries", 0), *options.items()]
    if trust is None:
        return grpc.insecure_channel(target, options=opts)
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(trust), options=opts)


async def test_grpc_unary_streaming_bidi_and_10mb_through_intercepted_tls(cp, start_proxy, pki, grpc_tls):
    cp.routes = [route("api", "localhost", grpc_tls.port)]
    proxy = await start_proxy()

    def calls() -> dict:
        with _channel(proxy, f"localhost:{grpc_tls.port}", trust=pki.client_bundle.read_bytes()) as ch:
            metadata = [("authorization", "Bearer app-placeholder"), ("x-trace", "t-1")]
            unary = json.loads(method(ch, "Unary")(b"hello", metadata=metadata, timeout=10))
            streamed = [len(m) for m in method(ch, "Stream", "unary_stream")(
                json.dumps({"count": 50, "size": 100_000}).encode(), timeout=20)]
            bidi = list(method(ch, "Bidi", "stream_stream")(iter([b"one", b"two", b"three"]), timeout=10))
            big_up = json.loads(method(ch, "Unary")(b"u" * 10_000_000, timeout=30))
            big_down = [len(m) for m in method(ch, "Stream", "unary_stream")(
                json.dumps({"count": 1, "size": 10_000_000}).encode(), timeout=30)]
        return {"unary": unary, "streamed": streamed, "bidi": bidi, "big_up": big_up, "big_down": big_down}

    got = await asyncio.to_thread(calls)
    assert got["unary"]["authorization"] == f"Bearer {TOKEN}"  # the app's value was overwritten
    assert got["unary"]["metadata"]["x-trace"] == "t-1"  # other metadata passes through
    assert got["streamed"] == [100_000] * 50
    assert got["bidi"] == [b"ONE", b"TWO", b"THREE"]
    assert got["big_up"]["len"] == 10_000_000
    assert got["big_down"] == [10_000_000]
    # the server-side interceptor saw the injected credential on every call, and only it
    assert [auth for _, auth in grpc_tls.seen] == [f"Bearer {TOKEN}"] * 5


async def test_grpc_deadline_resets_one_stream_and_the_connection_goes_on(cp, start_proxy, pki, grpc_tls):
    cp.routes = [route("api", "localhost", grpc_tls.port)]
    proxy = await start_proxy()

    def calls() -> tuple[grpc.StatusCode, bytes]:
        with _channel(proxy, f"localhost:{grpc_tls.port}", trust=pki.client_bundle.read_bytes()) as ch:
            with pytest.raises(grpc.RpcError) as err:
                method(ch, "Sleep")(json.dumps({"seconds": 2}).encode(), timeout=0.3)
            after = method(ch, "Sleep")(json.dumps({"seconds": 0}).encode(), timeout=10)
        return err.value.code(), after

    code, after = await asyncio.to_thread(calls)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert after == b"slept"


async def test_refused_credential_is_unavailable_for_new_streams_while_open_ones_continue(
    cp, start_proxy, pki, grpc_tls, clock
):
    """The credential expires mid-connection; the control plane now refuses: a new stream gets
    UNAVAILABLE with the reason, while a bidi stream opened before keeps working. Then the control
    plane issues again: the next new stream carries the fresh credential."""
    cp.routes = [route("api", "localhost", grpc_tls.port)]
    cp.script["aud-api"] = [("ok", "cred-1"), (403, {"error": "policy_denied", "message": "no policy"}),
                            ("ok", "cred-3")]
    proxy = await start_proxy()
    loop = asyncio.get_running_loop()

    def advance(seconds: float) -> None:
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result()
        clock.advance(seconds)

    def calls() -> dict:
        out: dict = {}
        with _channel(proxy, f"localhost:{grpc_tls.port}", trust=pki.client_bundle.read_bytes()) as ch:
            queue: list[bytes] = [b"first"]
            gate = __import__("threading").Event()

            def messages():
                yield queue[0]
                gate.wait(10)
                yield b"second"

            bidi = method(ch, "Bidi", "stream_stream")(messages(), timeout=20)
            out["first"] = next(bidi)
            advance(cp.expires_in + 1)  # the credential expired
            with pytest.raises(grpc.RpcError) as err:
                method(ch, "Unary")(b"x", timeout=10)
            out["refused"] = (err.value.code(), err.value.details())
            gate.set()
            out["second"] = next(bidi)
            out["fresh"] = json.loads(method(ch, "Unary")(b"y", timeout=10))["authorization"]
        return out

    got = await asyncio.to_thread(calls)
    assert got["first"] == b"FIRST" and got["second"] == b"SECOND"
    code, details = got["refused"]
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "policy_denied" in details
    assert got["fresh"] == "Bearer cred-3"
    assert [auth for m, auth in grpc_tls.seen if m.endswith("Unary")] == ["Bearer cred-3"]


async def test_grpc_authority_naming_another_host_is_refused(cp, start_proxy, pki, grpc_tls):
    """:authority must name the intercepted connection's host: otherwise nothing is forwarded."""
    cp.routes = [route("api", "localhost", grpc_tls.port)]
    proxy = await start_proxy()

    def call() -> grpc.RpcError:
        options = {"grpc.default_authority": "evil.example", "grpc.ssl_target_name_override": "localhost"}
        trust = pki.client_bundle.read_bytes()
        with _channel(proxy, f"localhost:{grpc_tls.port}", trust=trust, **options) as ch:
            with pytest.raises(grpc.RpcError) as err:
                method(ch, "Unary")(b"x", timeout=10)
        return err.value

    err = await asyncio.to_thread(call)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "misdirected_request" in err.details()
    assert grpc_tls.seen == []


async def test_h2c_inside_connect_to_a_governed_plaintext_route(cp, start_proxy, grpc_plain):
    """gRPC with prior knowledge (h2c) to a plaintext target: CONNECT, then HTTP/2 inside; the
    credential is injected per stream and the upstream is spoken to in h2c."""
    cp.routes = [route("api", "localhost", grpc_plain.port, scheme="http")]
    proxy = await start_proxy()

    def call() -> dict:
        with _channel(proxy, f"localhost:{grpc_plain.port}", trust=None) as ch:
            unary = json.loads(method(ch, "Unary")(b"x", metadata=MINE, timeout=10))
            streamed = sum(len(m) for m in method(ch, "Stream", "unary_stream")(
                json.dumps({"count": 20, "size": 50_000}).encode(), timeout=20))
        return {"unary": unary, "streamed": streamed}

    got = await asyncio.to_thread(call)
    assert got["unary"]["authorization"] == f"Bearer {TOKEN}"
    assert got["streamed"] == 1_000_000


async def test_ungoverned_grpc_is_tunnelled_untouched(cp, start_proxy, pki, grpc_tls):
    """No route: the app's TLS reaches the real server (trusting only the dev CA, not the pod CA, so a
    proxy leaf would fail) and its own metadata arrives as sent."""
    cp.routes = [route("other", "api.sesame.test", 443)]
    proxy = await start_proxy()

    def call() -> dict:
        with _channel(proxy, f"localhost:{grpc_tls.port}", trust=pki.dev_ca.cert_pem) as ch:
            return json.loads(method(ch, "Unary")(b"x", metadata=MINE, timeout=10))

    got = await asyncio.to_thread(call)
    assert got["authorization"] == "Bearer mine"
    assert cp.exchanges == []


async def test_httpx_http2_to_an_http11_upstream_is_translated(cp, start_proxy, https_api, pki):
    """The app speaks h2; the upstream's ALPN picks http/1.1: each stream becomes an HTTP/1.1
    exchange, with the credential overwriting the app's placeholder, request and response bodies whole."""
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=client_ssl(pki), http2=True) as client:
        got = await client.get(f"https://localhost:{https_api.port}/v1/hello",
                               headers={"Authorization": "Bearer placeholder"})
        posted = await client.post(f"https://localhost:{https_api.port}/v1/echo", content=b"p" * 300_000)
        base = f"https://localhost:{https_api.port}"
        gets = await asyncio.gather(*[client.get(f"{base}/v1/n{i}") for i in range(20)])
    assert got.http_version == "HTTP/2" and got.status_code == 200, got.text
    assert posted.status_code == 200 and posted.json()["body_bytes"] == 300_000
    assert [r.status_code for r in gets] == [200] * 20
    assert all(seen.authorized for seen in https_api.seen)
    assert len(https_api.seen) == 22


async def test_httpx_http2_misdirected_authority_is_421(cp, start_proxy, https_api, pki):
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=client_ssl(pki), http2=True) as client:
        resp = await client.get(f"https://localhost:{https_api.port}/v1/x", headers={"Host": "evil.example"})
    assert resp.http_version == "HTTP/2"
    assert resp.status_code == 421 and resp.json()["error"] == "misdirected_request"
    assert https_api.seen == []


async def test_http2_stream_without_credential_gets_the_json_error(cp, start_proxy, https_api, pki):
    cp.script["aud-api"] = [(403, {"error": "policy_denied", "message": "no policy allows this"})]
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy()
    async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=client_ssl(pki), http2=True) as client:
        resp = await client.get(f"https://localhost:{https_api.port}/v1/x")
    assert resp.status_code == 403 and resp.json()["error"] == "policy_denied"
    assert https_api.seen == []


async def test_curl_http2_through_the_explicit_proxy(cp, start_proxy, https_api, pki):
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy()
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--http2", "--cacert", str(pki.client_bundle), "-x", proxy_url(proxy),
        "-w", "\n%{http_version}", f"https://localhost:{https_api.port}/v1/hello",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    body, _, version = out.decode().rpartition("\n")
    assert version == "2", (out, err)
    assert json.loads(body)["ok"] is True
    assert https_api.seen[-1].authorized


async def test_app_offering_h2_gets_h2_and_the_upstream_is_offered_h2_then_http11(cp, start_proxy, pki):
    upstream_alpn: list[str | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_alpn.append(writer.get_extra_info("ssl_object").selected_alpn_protocol())
        writer.close()

    up_ctx = server_context(pki.server_cert, pki.server_key)
    up_ctx.set_alpn_protocols(["h2", "http/1.1"])
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=up_ctx)
    port = server.sockets[0].getsockname()[1]
    cp.routes = [route("api", "localhost", port)]
    proxy = await start_proxy()
    app_ctx = client_ssl(pki)
    app_ctx.set_alpn_protocols(["h2", "http/1.1"])
    try:
        async with httpx.AsyncClient(proxy=proxy_url(proxy), verify=app_ctx, http2=True) as client:
            resp = await client.get(f"https://localhost:{port}/v1/x")
    finally:
        server.close()
    assert resp.http_version == "HTTP/2"
    assert resp.status_code == 502  # the upstream closed at once: an error reply on the stream
    assert upstream_alpn == ["h2"]


def test_the_proxy_imports_h2_only_when_a_connection_negotiates_it() -> None:
    import subprocess
    import sys

    code = "import proxy.app, proxy.main, sys; print(any(m.split('.')[0] == 'h2' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"



async def test_h2c_with_prior_knowledge_to_the_explicit_proxy_port(cp, start_proxy, grpc_plain):
    """h2c straight to the proxy port (no CONNECT): each stream is an absolute-form request for
    http://<:authority><:path> — here a gRPC call made by curl, governed, so injected."""
    cp.routes = [route("api", "127.0.0.1", grpc_plain.port, scheme="http")]
    proxy = await start_proxy()
    host, port = proxy.listener.address
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "10", "--http2-prior-knowledge",
        "-H", f"Host: 127.0.0.1:{grpc_plain.port}",
        "-H", "content-type: application/grpc", "-H", "te: trailers", "-H", "authorization: Bearer mine",
        "--data-binary", "@-", f"http://{host}:{port}/{SERVICE}/Unary",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(grpc_frame(b"by curl")), 20)
    assert proc.returncode == 0, err
    assert json.loads(out[5:])["authorization"] == f"Bearer {TOKEN}"
    assert [auth for _, auth in grpc_plain.seen] == [f"Bearer {TOKEN}"]


async def test_upstream_max_concurrent_streams_queues_the_rest(cp, start_proxy, pki):
    """The upstream allows 2 concurrent streams; the app opens 12 at once on one connection: the proxy
    keeps at most 2 open upstream and starts the others as streams finish; all succeed."""
    with GrpcServer(pki.server_cert, pki.server_key, options=(("grpc.max_concurrent_streams", 2),)) as server:
        cp.routes = [route("api", "localhost", server.port)]
        proxy = await start_proxy()

        def calls() -> list[bytes]:
            with _channel(proxy, f"localhost:{server.port}", trust=pki.client_bundle.read_bytes()) as ch:
                sleep = method(ch, "Sleep")
                futures = [sleep.future(json.dumps({"seconds": 0.2}).encode(), timeout=20) for _ in range(12)]
                return [f.result() for f in futures]

        started = asyncio.get_running_loop().time()
        results = await asyncio.to_thread(calls)
        elapsed = asyncio.get_running_loop().time() - started
    assert results == [b"slept"] * 12
    assert elapsed >= 1.0  # 12 calls of 0.2 s, two at a time upstream: at least 6 rounds


async def test_upstream_goaway_moves_new_streams_to_a_new_connection(cp, start_proxy, pki):
    """The upstream closes each connection gracefully (GOAWAY) after 300 ms: calls made across
    several such closes all succeed on the same app connection."""
    options = (("grpc.max_connection_age_ms", 300), ("grpc.max_connection_age_grace_ms", 2000))
    with GrpcServer(pki.server_cert, pki.server_key, options=options) as server:
        cp.routes = [route("api", "localhost", server.port)]
        proxy = await start_proxy()

        def calls() -> list[str]:
            out = []
            with _channel(proxy, f"localhost:{server.port}", trust=pki.client_bundle.read_bytes()) as ch:
                for _ in range(12):  # ~1.2 s: several upstream connection ages
                    out.append(json.loads(method(ch, "Unary")(b"x", timeout=10))["authorization"])
                    time.sleep(0.1)
            return out

        got = await asyncio.to_thread(calls)
    assert got == [f"Bearer {TOKEN}"] * 12
