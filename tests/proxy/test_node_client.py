"""A Node.js client through the proxy in explicit mode (Node is among the runtimes the trust bundle serves).

Node's https module ignores HTTPS_PROXY, so the script opens the CONNECT tunnel itself and runs
`https.request` over that socket, trusting only the default roots plus NODE_EXTRA_CA_CERTS — the
pod trust bundle, as the webhook sets it. Plain HTTP goes as an absolute-form request.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import pytest
from cryptography import x509

from tests.proxy.conftest import API_KEY, route

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

HTTPS_VIA_CONNECT = r"""
const http = require('http'), https = require('https');
const [proxyHost, proxyPort, host, port] = process.argv.slice(1);
const connect = http.request({host: proxyHost, port: +proxyPort, method: 'CONNECT', path: `${host}:${port}`});
connect.on('connect', (res, socket) => {
  if (res.statusCode !== 200) { console.error('CONNECT answered', res.statusCode); process.exit(2); }
  const req = https.request({
    host, port: +port, path: '/v1/node', method: 'POST', agent: false,
    socket, servername: host,  // the agent's tls.connect wraps the tunnel socket
    headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer placeholder'},
  }, (resp) => {
    let body = '';
    resp.on('data', (d) => body += d);
    resp.on('end', () => {
      const cert = resp.socket.getPeerCertificate();
      console.log(JSON.stringify({status: resp.statusCode, body: JSON.parse(body),
        authorized: resp.socket.authorized, subject: cert.subject.CN, issuer: cert.issuer.CN}));
      socket.destroy();
    });
  });
  req.on('error', (e) => { console.error(e.message); process.exit(3); });
  req.end(JSON.stringify({hello: 'node'}));
});
connect.on('error', (e) => { console.error(e.message); process.exit(4); });
connect.end();
"""

HTTP_ABSOLUTE_FORM = r"""
const http = require('http');
const [proxyHost, proxyPort, url] = process.argv.slice(1);
const target = new URL(url);
http.get({host: proxyHost, port: +proxyPort, path: url, headers: {Host: target.host}}, (resp) => {
  let body = '';
  resp.on('data', (d) => body += d);
  resp.on('end', () => console.log(JSON.stringify({status: resp.statusCode, body: JSON.parse(body)})));
}).on('error', (e) => { console.error(e.message); process.exit(3); });
"""


async def run_node(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    proc = await asyncio.create_subprocess_exec(
        "node",
        "-e",
        script,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**clean, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, f"node exited {proc.returncode}: {err.decode()}"
    return json.loads(out)


async def test_node_https_through_connect_trusts_the_pod_ca_via_node_extra_ca_certs(
    cp, start_proxy, https_api, pki
):
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy()
    host, port = proxy.listener.address
    result = await run_node(
        HTTPS_VIA_CONNECT,
        host,
        str(port),
        "localhost",
        str(https_api.port),
        env={"NODE_EXTRA_CA_CERTS": str(pki.trust_bundle)},
    )
    pod_ca = x509.load_pem_x509_certificate(pki.pod_ca_file.read_bytes())
    pod_ca_cn = pod_ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert result["status"] == 200, result
    assert result["authorized"] is True
    assert (result["subject"], result["issuer"]) == ("localhost", pod_ca_cn)  # a pod-CA leaf, verified
    assert result["body"]["method"] == "POST" and result["body"]["body_bytes"] == len(b'{"hello":"node"}')
    assert https_api.seen[-1].headers["Authorization"] == f"Bearer {API_KEY}"


async def test_node_without_the_trust_bundle_rejects_the_intercepted_leaf(cp, start_proxy, https_api):
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy()
    host, port = proxy.listener.address
    proc = await asyncio.create_subprocess_exec(
        "node",
        "-e",
        HTTPS_VIA_CONNECT,
        host,
        str(port),
        "localhost",
        str(https_api.port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "NODE_EXTRA_CA_CERTS"},
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 3, err.decode()
    assert "unable to verify the first certificate" in err.decode()  # a pod-CA leaf, not trusted
    labels = {"target": "api", "outcome": "client_tls_failed"}
    for _ in range(100):  # the proxy sees the handshake fail just after node exits
        if proxy.metrics.sample("sesame_proxy_requests_total", labels):
            break
        await asyncio.sleep(0.02)
    assert proxy.metrics.sample("sesame_proxy_requests_total", labels) == 1
    assert https_api.seen == []  # the request never left the app


async def test_node_plain_http_absolute_form_gets_the_credential(cp, start_proxy, http_api):
    cp.script["aud-plain"] = [("ok", API_KEY)]
    cp.routes = [route("plain", "127.0.0.1", http_api.port, scheme="http")]
    proxy = await start_proxy()
    host, port = proxy.listener.address
    result = await run_node(
        HTTP_ABSOLUTE_FORM, host, str(port), f"http://127.0.0.1:{http_api.port}/v1/plain?n=1"
    )
    assert result["status"] == 200, result
    assert result["body"]["path"] == "/v1/plain"
    assert http_api.seen[-1].headers["Authorization"] == f"Bearer {API_KEY}"
    assert http_api.seen[-1].query == {"n": "1"}
