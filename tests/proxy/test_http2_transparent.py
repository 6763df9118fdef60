"""HTTP/2 and gRPC in transparent mode, in a network namespace with the init container's REDIRECT
rules (layout: tests/proxy/test_transparent_mode.py). The app (UID 1000, no proxy settings) runs a
grpcio client and curl: gRPC over TLS (h2 to an h2 upstream), gRPC and curl with prior knowledge
(h2c) to a governed plaintext port, curl --http2 to an HTTP/1.1-only upstream (translated), and h2c
to a port no route uses (tunnelled untouched)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from devkit.upstream import ApiServer, server_context
from proxy.netfilter import RedirectSettings, apply_rules
from tests.netfilter_tools import require_netfilter
from tests.proxy.conftest import API_KEY, route
from tests.proxy.cp_double import ControlPlaneDouble
from tests.proxy.grpc_peers import SERVICE, GrpcServer, grpc_frame
from tests.proxy.test_transparent_mode import (  # noqa: F401 - fixtures
    APP_UID,
    PROXY_UID,
    _start_proxy,
    pod_hosts,
    pod_netns,
    pytestmark,
    shared_dir,
)

_APP = """
import grpc, json, sys
host, tls_port, plain_port, other_port, bundle = sys.argv[1:]
unary = "/sesame.test.Echo/Unary"
mine = [("authorization", "Bearer mine")]
out = {}
creds = grpc.ssl_channel_credentials(open(bundle, "rb").read())
opts = [("grpc.ssl_target_name_override", "api.sesame.test"),
        ("grpc.default_authority", f"api.sesame.test:{tls_port}")]
with grpc.secure_channel(f"{host}:{tls_port}", creds, options=opts) as ch:
    out["tls"] = json.loads(ch.unary_unary(unary)(b"x", metadata=mine, timeout=10))["authorization"]
plain_opts = [("grpc.default_authority", f"api.sesame.test:{plain_port}")]
with grpc.insecure_channel(f"{host}:{plain_port}", options=plain_opts) as ch:
    out["h2c"] = json.loads(ch.unary_unary(unary)(b"x", metadata=mine, timeout=10))["authorization"]
with grpc.insecure_channel(f"{host}:{other_port}") as ch:
    out["ungoverned"] = json.loads(ch.unary_unary(unary)(b"x", metadata=mine, timeout=10))["authorization"]
print(json.dumps(out))
"""


async def _as_app(ns: str, *argv: str, stdin: bytes | None = None) -> tuple[bytes, bytes, int]:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns, "setpriv", f"--reuid={APP_UID}", f"--regid={APP_UID}", "--clear-groups",
        *argv,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ["PATH"], "HOME": "/tmp"},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return out, err, proc.returncode or 0


async def test_http2_and_grpc_in_transparent_mode(pod_netns, shared_dir, pki):  # noqa: F811
    require_netfilter()
    ns, host_ip, _, _ = pod_netns
    cert = pki.dev_ca.issue(["api.sesame.test", host_ip], shared_dir / "server")
    tls_context = server_context(cert.cert_file, cert.key_file)
    h1_api = await ApiServer(API_KEY, host_ip, ssl_context=tls_context).start()
    cp = ControlPlaneDouble(host=host_ip)
    with GrpcServer(cert.cert_file, cert.key_file, host=host_ip) as tls, GrpcServer(host=host_ip) as plain, \
            GrpcServer(host=host_ip) as other:
        cp.script = {"aud-h1": [("ok", API_KEY)]}
        cp.routes = [
            route("tls", "api.sesame.test", tls.port, audience="aud-tls"),
            route("plain", "api.sesame.test", plain.port, scheme="http", audience="aud-plain"),
            route("h1", "api.sesame.test", h1_api.port, audience="aud-h1"),
        ]
        await cp.start()
        apply_rules(RedirectSettings(proxy_port=15001, proxy_uid=PROXY_UID), netns=ns)
        pod_hosts(ns, (host_ip, "api.sesame.test"))
        proxy = await _start_proxy(ns, shared_dir, cp)
        bundle = str(shared_dir / "app-bundle.pem")
        try:
            await proxy.wait_for_log("routes loaded")
            out, err, rc = await _as_app(
                ns, sys.executable, "-c", _APP, host_ip, str(tls.port), str(plain.port), str(other.port),
                bundle,
            )
            assert rc == 0, (err.decode()[-2000:], proxy.logs[-10:])
            got = json.loads(out)
            assert got == {"tls": "Bearer token-aud-tls-1", "h2c": "Bearer token-aud-plain-1",
                           "ungoverned": "Bearer mine"}
            assert [auth for _, auth in other.seen] == ["Bearer mine"]

            # curl with prior knowledge: a gRPC call by hand to the governed plaintext port
            out, err, rc = await _as_app(
                ns, "curl", "-sS", "--max-time", "10", "--http2-prior-knowledge",
                "--resolve", f"api.sesame.test:{plain.port}:{host_ip}",
                "-H", "content-type: application/grpc", "-H", "te: trailers",
                "-H", "authorization: Bearer mine",
                "--data-binary", "@-", f"http://api.sesame.test:{plain.port}/{SERVICE}/Unary",
                stdin=grpc_frame(b"by curl"),
            )
            assert rc == 0, err
            assert out[:1] == b"\x00" and int.from_bytes(out[1:5], "big") == len(out) - 5
            assert json.loads(out[5:])["authorization"] == "Bearer token-aud-plain-1"

            # curl --http2 to an upstream that only speaks HTTP/1.1: translated per stream
            out, err, rc = await _as_app(
                ns, "curl", "-sS", "--max-time", "10", "--http2", "--cacert", bundle,
                "--resolve", f"api.sesame.test:{h1_api.port}:{host_ip}", "-w", "\n%{http_version}",
                f"https://api.sesame.test:{h1_api.port}/v1/hello",
            )
            body, _, version = out.decode().rpartition("\n")
            assert rc == 0 and version == "2", err
            assert json.loads(body)["ok"] is True and h1_api.seen[-1].authorized
        finally:
            await proxy.stop()
            await cp.stop()
            await h1_api.close()
