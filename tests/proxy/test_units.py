"""Small pieces in isolation: SNI parsing, injection, routes (ETag, outage), settings, the pod CA files."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from proxy.clienthello import parse_sni, record_complete
from proxy.config import ProxySettings, parse_hostport, parse_listen6
from proxy.controlplane_client import ControlPlaneClient
from proxy.errors import ConfigError
from proxy.identity import TokenFile
from proxy.inject import compile_injector
from proxy.pod_ca import init_pod_ca
from proxy.routes import Injection, Route, RouteSync
from proxy.tls import TRUSTSTORE_PASSWORD, client_context
from tests.proxy.conftest import route


def client_hello(server_name: str | None) -> bytes:
    """The first flight of a real TLS client (ssl module, memory BIOs)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    if server_name is None:
        ctx.check_hostname = False
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_sni_is_read_from_a_real_client_hello():
    hello = client_hello("API.Example.com")
    assert record_complete(hello)
    assert parse_sni(hello) == "api.example.com"


@pytest.mark.parametrize(
    "data", [b"", b"\x16\x03\x01\x00", b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x00\x05\x01\x00"]
)
def test_sni_parse_rejects_garbage(data):
    assert parse_sni(data) is None


def test_ip_address_hello_has_no_sni():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")  # IPs are not sent as SNI
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    assert parse_sni(outgoing.read()) is None


@pytest.mark.parametrize(
    ("spec", "headers", "target", "want_headers", "want_target"),
    [
        (
            Injection(type="bearer"),
            [("authorization", "Bearer placeholder")],
            "/a",
            [("Authorization", "Bearer T")],
            "/a",
        ),
        (Injection(type="bearer", prefix="token "), [], "/a", [("Authorization", "token T")], "/a"),
        (Injection(type="basic"), [], "/a", [("Authorization", "Basic VA==")], "/a"),
        (
            Injection(type="header", name="X-Api-Key", prefix="k:"),
            [("X-API-KEY", "old"), ("A", "1")],
            "/a",
            [("A", "1"), ("X-Api-Key", "k:T")],
            "/a",
        ),
        (Injection(type="query", name="key"), [], "/a?key=old&b=2&key", [], "/a?b=2&key=T"),
        (Injection(type="query", name="key"), [], "/a", [], "/a?key=T"),
    ],
    ids=[
        "bearer-overwrites",
        "bearer-prefix",
        "basic",
        "header-overwrites-any-case",
        "query-overwrites",
        "query-adds",
    ],
)
def test_injection_overwrites_existing_values(spec, headers, target, want_headers, want_target):
    inject = compile_injector(spec)
    assert inject(headers, target, "T") == want_target
    assert headers == want_headers


def test_originate_route_is_reached_over_plain_http():
    r = Route.from_json(route("api", "API.example.com", 443, tls="originate"))
    assert r.host == "api.example.com"
    assert ("http", "api.example.com", 80) in r.keys()
    assert Route.from_json(route("p", "h", 8080, scheme="http")).keys() == [("http", "h", 8080)]


async def test_route_refresh_uses_etag_and_keeps_the_table_when_control_plane_is_down(cp, token_file):
    cp.routes = [route("api", "localhost", 443)]
    client = ControlPlaneClient(cp.url, TokenFile(token_file))
    sync = RouteSync(client)
    try:
        assert await sync.refresh() is True
        assert await sync.refresh() is False  # 304
        assert cp.route_requests[-1]["If-None-Match"]
        assert cp.route_requests[-1]["Authorization"] == "Bearer sa-token-1"
        await cp.stop()
        with pytest.raises(Exception):  # noqa: B017 - the failure type is the client's concern
            await sync.refresh()
        assert sync.table.lookup("tls", "localhost", 443) is not None
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:15001", ("127.0.0.1", 15001)), ("[::1]:80", ("::1", 80)), ("0.0.0.0:0", ("0.0.0.0", 0))],
)
def test_hostport_parses(value, expected):
    assert parse_hostport(value, "listen") == expected


@pytest.mark.parametrize("value", ["15001", "host:", ":80", "h:99999", "h:x"])
def test_hostport_rejects(value):
    with pytest.raises(ConfigError):
        parse_hostport(value, "listen")


@pytest.mark.parametrize(
    ("value", "mode", "expected"),
    [
        ("auto", "transparent", (("::1", 15001), False)),
        ("auto", "explicit", (None, False)),
        ("off", "transparent", (None, False)),
        ("[::1]:15006", "transparent", (("::1", 15006), True)),
    ],
)
def test_listen6_is_derived_in_transparent_mode_and_required_when_given(value, mode, expected):
    assert parse_listen6(value, mode, ("127.0.0.1", 15001)) == expected


def test_listen6_rejects_an_ipv4_address():
    with pytest.raises(ConfigError) as err:
        parse_listen6("127.0.0.1:15001", "transparent", ("127.0.0.1", 15001))
    assert err.value.extra["field"] == "listen6"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"control_plane": "cp:8080"}, "control_plane"),
        ({"mode": "magic"}, "mode"),
        ({"connect_timeout": 0}, "connect_timeout"),
    ],
)
def test_invalid_settings_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        ProxySettings(**{"control_plane": "http://cp", **overrides})
    assert err.value.extra["field"] == field


def test_init_ca_writes_private_ca_and_public_trust_material(tmp_path):
    paths = init_pod_ca(tmp_path / "ca", tmp_path / "trust")
    assert (tmp_path / "ca").stat().st_mode & 0o077 == 0
    assert (tmp_path / "ca" / "sesame-ca.pem").stat().st_mode & 0o077 == 0
    bundle = paths["bundle"].read_text()
    assert paths["ca"].read_text() in bundle
    assert bundle.count("BEGIN CERTIFICATE") > 10  # the system roots too
    again = init_pod_ca(tmp_path / "ca", tmp_path / "trust")
    assert again["ca"].read_text() == paths["ca"].read_text()  # an existing CA is reused
    # cryptography verifies the HMAC with the password while loading
    loaded = pkcs12.load_pkcs12(paths["truststore"].read_bytes(), TRUSTSTORE_PASSWORD.encode())
    # Java trusts only what the store holds: the pod CA and, like the bundle, every system root.
    names = [c.friendly_name for c in loaded.additional_certs]
    assert names[-1] == b"sesame-pod-ca" and names.count(b"sesame-pod-ca") == 1
    assert len(names) == bundle.count("BEGIN CERTIFICATE")
    assert loaded.key is None
    if shutil.which("keytool"):
        out = subprocess.run(
            [
                "keytool",
                "-list",
                "-keystore",
                str(paths["truststore"]),
                "-storetype",
                "PKCS12",
                "-storepass",
                TRUSTSTORE_PASSWORD,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "trustedCertEntry" in out


def test_metrics_render_in_the_prometheus_text_format():
    from prometheus_client.parser import text_string_to_metric_families

    from proxy.metrics import Metrics

    metrics = Metrics()
    metrics.request("api", "forwarded")
    metrics.request("api", "forwarded")
    metrics.cache_hit.inc()
    metrics.exchange_seconds.labels("ok").observe(0.02)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    assert families["sesame_proxy_requests"].type == "counter"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
    }
    assert samples[("sesame_proxy_requests_total", (("outcome", "forwarded"), ("target", "api")))] == 2
    assert samples[("sesame_proxy_exchange_seconds_bucket", (("le", "0.01"), ("result", "ok")))] == 0
    assert samples[("sesame_proxy_exchange_seconds_bucket", (("le", "0.025"), ("result", "ok")))] == 1
    assert samples[("sesame_proxy_exchange_seconds_count", (("result", "ok"),))] == 1
    assert metrics.sample("sesame_proxy_credential_cache_total", {"result": "hit"}) == 1


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl computes the subject hashes")
async def test_roots_are_looked_up_on_demand_in_a_hashed_directory(tmp_path, pki, https_api):
    """With a c_rehash-style directory, a context parses no root up front and trusts exactly the
    roots named there by subject hash (the system's /etc/ssl/certs is used this way)."""

    def hashed_dir(name: str, ca_file) -> str:
        folder = tmp_path / name
        folder.mkdir()
        argv = ["openssl", "x509", "-subject_hash", "-noout", "-in", str(ca_file)]
        subject_hash = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
        shutil.copy(ca_file, folder / f"{subject_hash}.0")
        return str(folder)

    trusting = client_context(roots_dir=hashed_dir("dev", pki.dev_ca_file))
    assert trusting.cert_store_stats()["x509_ca"] == 0  # nothing loaded before a handshake needs it
    _, writer = await asyncio.open_connection(
        "127.0.0.1", https_api.port, ssl=trusting, server_hostname="localhost"
    )
    writer.close()
    other = client_context(roots_dir=hashed_dir("pod", pki.pod_ca_file))
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection("127.0.0.1", https_api.port, ssl=other, server_hostname="localhost")


async def test_route_refresh_survives_any_reply_and_retries_with_backoff(token_file):
    """One malformed chunked reply (size `zz`) must not stop route refresh until a restart."""
    from tests.proxy.rawhttp import RawServer, read_head

    good = b'{"routes": [], "refresh_seconds": 30}'
    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(good), good),
    ]

    async def serve(reader, writer):
        await read_head(reader)
        writer.write(replies.pop(0) if len(replies) > 1 else replies[0])
        await writer.drain()

    server = await RawServer(serve).start()
    sync = RouteSync(ControlPlaneClient(f"http://127.0.0.1:{server.port}", TokenFile(token_file)))
    sync.start()
    try:
        await asyncio.wait_for(sync.loaded.wait(), 10)  # the second poll, after a 1 s backoff
        assert server.connections == 2
    finally:
        await sync.close()
        await sync.client.close()
        await server.close()


def test_a_control_plane_ca_given_as_a_file_is_followed_when_it_changes(pki, token_file):
    """The proxy re-reads a mounted CA file (a CA rollover), and keeps PEM text as given."""
    from proxy.app import Proxy
    from proxy.controlplane_client import ReloadingTrust
    from tests.proxy.conftest import settings_for

    url = "https://cp.test:8443"
    as_file = Proxy(settings_for(url, pki, token_file, control_plane_ca=str(pki.dev_ca_file)))
    assert isinstance(as_file.client._trust, ReloadingTrust)
    pem = pki.dev_ca_file.read_text()
    as_text = Proxy(settings_for(url, pki, token_file, control_plane_ca=pem))
    assert as_text.client._trust is None
