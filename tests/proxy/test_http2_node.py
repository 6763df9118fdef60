"""Node's HTTP/2 clients through the proxy (explicit mode): `@grpc/grpc-js` (installed from npm into
a temporary directory once per session; it honours `grpc_proxy` with CONNECT) and the `http2`
module over a CONNECT tunnel the script opens itself."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.proxy.conftest import API_KEY, proxy_url, route
from tests.proxy.grpc_peers import GrpcServer

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None, reason="node and npm are not installed"
)

GRPC_JS = r"""
const grpc = require('@grpc/grpc-js');
const fs = require('fs');
const [target, caFile] = process.argv.slice(1);
const creds = caFile ? grpc.credentials.createSsl(fs.readFileSync(caFile))
                     : grpc.credentials.createInsecure();
const client = new grpc.Client(target, creds);
const raw = (b) => b;
const md = new grpc.Metadata();
md.set('authorization', 'Bearer mine');
const deadline = () => ({deadline: Date.now() + 10000});
const service = '/sesame.test.Echo/';
client.makeUnaryRequest(service + 'Unary', raw, raw, Buffer.from('node'), md, deadline(), (err, resp) => {
  if (err) { console.error('unary', err.code, err.details); process.exit(2); }
  const unary = JSON.parse(resp.toString());
  const ask = Buffer.from(JSON.stringify({count: 10, size: 100000}));
  const none = new grpc.Metadata();
  const call = client.makeServerStreamRequest(service + 'Stream', raw, raw, ask, none, deadline());
  let total = 0;
  call.on('data', (d) => { total += d.length; });
  call.on('error', (e) => { console.error('stream', e.code, e.details); process.exit(3); });
  call.on('end', () => {
    console.log(JSON.stringify({authorization: unary.authorization, total}));
    client.close();
  });
});
"""

HTTP2_VIA_CONNECT = r"""
const http = require('http'), http2 = require('http2'), tls = require('tls'), fs = require('fs');
const [proxyHost, proxyPort, host, port, ca] = process.argv.slice(1);
const connect = http.request({host: proxyHost, port: +proxyPort, method: 'CONNECT', path: `${host}:${port}`});
connect.on('connect', (res, socket) => {
  if (res.statusCode !== 200) { console.error('CONNECT answered', res.statusCode); process.exit(2); }
  const session = http2.connect(`https://${host}:${port}`, {
    createConnection: () => tls.connect({socket, servername: host, ALPNProtocols: ['h2'],
                                         ca: fs.readFileSync(ca)}),
  });
  session.on('error', (e) => { console.error(e.message); process.exit(3); });
  const req = session.request({':method': 'POST', ':path': '/v1/node-h2', 'content-type': 'application/json',
                               'authorization': 'Bearer placeholder'});
  let body = '', status = 0;
  req.on('response', (h) => { status = h[':status']; });
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    console.log(JSON.stringify({status, alpn: session.alpnProtocol, body: JSON.parse(body)}));
    session.close();
    socket.destroy();
  });
  req.end(JSON.stringify({hello: 'h2'}));
});
connect.on('error', (e) => { console.error(e.message); process.exit(4); });
connect.end();
"""


@pytest.fixture(scope="session")
def grpc_js(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with @grpc/grpc-js installed from the npm registry."""
    root = tmp_path_factory.mktemp("grpc-js")
    (root / "package.json").write_text('{"name": "sesame-grpc-js-test", "private": true}')
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "@grpc/grpc-js@1"], cwd=root,
                   check=True, capture_output=True, timeout=300)
    return root


async def _node(script: str, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> dict:
    proc = await asyncio.create_subprocess_exec(
        "node", "-e", script, *args, cwd=cwd, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={"PATH": os.environ["PATH"], **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    return json.loads(out)


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "h2c"])
async def test_grpc_js_through_the_explicit_proxy(cp, start_proxy, pki, grpc_js, tls):
    with GrpcServer(pki.server_cert, pki.server_key) if tls else GrpcServer() as server:
        cp.routes = [route("api", "localhost", server.port, scheme="https" if tls else "http")]
        proxy = await start_proxy()
        got = await _node(GRPC_JS, f"localhost:{server.port}", str(pki.client_bundle) if tls else "",
                          cwd=grpc_js, env={"grpc_proxy": proxy_url(proxy)})
    assert got == {"authorization": "Bearer token-aud-api-1", "total": 1_000_000}
    assert [auth for _, auth in server.seen] == ["Bearer token-aud-api-1"] * 2


async def test_node_http2_module_through_a_connect_tunnel(cp, start_proxy, https_api, pki):
    cp.script["aud-api"] = [("ok", API_KEY)]
    cp.routes = [route("api", "localhost", https_api.port)]
    proxy = await start_proxy()
    host, port = proxy.listener.address
    args = (host, str(port), "localhost", str(https_api.port), str(pki.client_bundle))
    got = await _node(HTTP2_VIA_CONNECT, *args)
    assert got["status"] == 200 and got["alpn"] == "h2"
    assert got["body"]["path"] == "/v1/node-h2"
    assert https_api.seen[-1].authorized
