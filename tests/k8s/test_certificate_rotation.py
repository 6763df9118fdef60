"""The control plane's serving certificate rotates under a running control plane and proxy.

Real processes: `sesame-controlplane serve` with a leaf from a CA, and a governed `sesame-proxy run`
that trusts that CA (SESAME_CONTROL_PLANE_CA, as the webhook injects it). The leaf files are
replaced the way the kubelet updates a mounted Secret (new files, then an atomic rename) while
requests keep flowing through the proxy and TLS clients (the apiserver calling the webhook) keep
connecting: none may fail, and new handshakes must get the new leaf without a restart.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from devkit.certs import DevCA
from proxy.errors import CredentialUnavailable
from tests.e2e.test_control_plane_tls import POLL_ATTEMPTS, _governed_proxy
from tests.e2e.test_control_plane_tls import admin as admin  # fixture
from tests.e2e.test_control_plane_tls import tls_control_plane as tls_control_plane  # fixture
from tests.proxy.conftest import pki as pki  # the session PKI fixture
from tests.proxy.procs import governed_args, start_proxy_process

RELOAD_WAIT_SECONDS = 20.0  # the control plane checks its files every 5 s
REQUESTS = 60


async def _served_leaf(port: int, ca_pem: bytes) -> x509.Certificate:
    """The leaf a new verified handshake gets (as the apiserver would connect to the webhook)."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der)


def _swap(target: Path, source: Path) -> None:
    tmp = target.with_name(target.name + ".new")
    tmp.write_bytes(source.read_bytes())
    os.replace(tmp, target)


async def test_serving_certificate_rotates_under_a_running_control_plane_and_proxy(
    tls_control_plane, admin, pki, tmp_path
):
    cp, ca = tls_control_plane, tls_control_plane.ca
    port = int(cp.url.rsplit(":", 1)[1])
    live = tmp_path / "cp-tls" / "controlplane.pem"  # what the fixture passes as --tls-cert/--tls-key
    live_key = tmp_path / "cp-tls" / "controlplane-key.pem"
    assert str(live) in cp.process.process.args
    old = await _served_leaf(port, ca.cert_pem)
    renewed = ca.issue(["127.0.0.1", "localhost"], tmp_path / "renewed", stem="controlplane")

    async with _governed_proxy(cp, admin, pki, tmp_path, control_plane_ca=ca.cert_pem) as (api, proxy):
        assert (await proxy.wait_ready(POLL_ATTEMPTS)).status_code == 200
        verify = ssl.create_default_context(cafile=str(pki.client_bundle))
        statuses, leaves = [], []
        async with httpx.AsyncClient(proxy=proxy.url, verify=verify, timeout=10) as client:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + RELOAD_WAIT_SECONDS
            for i in range(REQUESTS):
                if i == 5:  # the key first, then the chain: a half-swapped pair is never served
                    _swap(live_key, renewed.key_file)
                    statuses.append(
                        (await client.get(f"https://localhost:{api.port}/v1/charges")).status_code
                    )
                    leaves.append(await _served_leaf(port, ca.cert_pem))
                    _swap(live, renewed.cert_file)
                statuses.append((await client.get(f"https://localhost:{api.port}/v1/charges")).status_code)
                leaves.append(await _served_leaf(port, ca.cert_pem))
                if (leaves[-1] != old and i > 5) or loop.time() > deadline:
                    break
                await asyncio.sleep(RELOAD_WAIT_SECONDS / REQUESTS)
        assert statuses and set(statuses) == {200}
        assert leaves[-1] != old, "the control plane still serves the old leaf"
        assert (
            leaves[-1].serial_number
            == x509.load_pem_x509_certificate(renewed.cert_file.read_bytes()).serial_number
        )
        assert {leaf.serial_number for leaf in leaves} <= {old.serial_number, leaves[-1].serial_number}
        assert "serving certificate reloaded" in cp.process.log_text()

        # A pod injected before the renewal (the same CA in its env) starts against the new leaf.
        env = {"SESAME_CONTROL_PLANE_CA": ca.cert_pem.decode()}
        later = await start_proxy_process(*governed_args(cp.url, tmp_path / "token", pki), env=env)
        try:
            assert (await later.wait_ready(POLL_ATTEMPTS)).status_code == 200
        finally:
            await later.stop()


async def test_a_broken_pair_keeps_the_current_certificate(tmp_path):
    from controlplane.serving_tls import ServingCertificate

    ca = DevCA("rotation")
    first = ca.issue(["localhost"], tmp_path / "a")
    second = ca.issue(["localhost"], tmp_path / "b")
    serving = ServingCertificate(first.cert_file, first.key_file)
    assert serving.reload_if_changed() is False  # nothing changed
    first.key_file.write_bytes(second.key_file.read_bytes())  # key of b, certificate of a
    assert serving.reload_if_changed() is False
    first.cert_file.write_bytes(second.cert_file.read_bytes())
    assert serving.reload_if_changed() is True
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=serving.listening)
    try:
        port = server.sockets[0].getsockname()[1]
        leaf = await _served_leaf(port, ca.cert_pem)
    finally:
        server.close()
    assert leaf == x509.load_pem_x509_certificate(second.cert_file.read_bytes())


async def test_proxy_follows_a_ca_rollover_from_its_mounted_ca_file(tmp_path):
    """The control plane moves to a leaf of a new CA (after the overlap); the proxy's CA file, a
    mounted ConfigMap the kubelet updates in place, now holds both CAs: new connections verify."""
    from aiohttp import web

    from controlplane.serving_tls import ServingCertificate
    from proxy.controlplane_client import ControlPlaneClient, ReloadingTrust
    from proxy.identity import TokenFile
    from proxy.tls import client_context

    old_ca, new_ca = DevCA("webhook CA 1"), DevCA("webhook CA 2")
    leaf = old_ca.issue(["localhost"], tmp_path / "leaf")
    serving = ServingCertificate(leaf.cert_file, leaf.key_file)

    async def routes(_request: web.Request) -> web.Response:
        return web.json_response({"routes": [], "refresh_seconds": 30})

    app = web.Application()
    app.router.add_get("/v1/proxy/routes", routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=serving.listening)
    await site.start()
    port = runner.addresses[0][1]
    ca_file = tmp_path / "cp-ca" / "ca.crt"
    ca_file.parent.mkdir()
    ca_file.write_bytes(old_ca.cert_pem)
    (tmp_path / "token").write_text("sa-token")
    now = [0.0]
    trust = ReloadingTrust(ca_file, client_context, interval=10.0, clock=lambda: now[0])
    client = ControlPlaneClient(f"https://localhost:{port}", TokenFile(tmp_path / "token"), trust=trust)
    try:
        assert (await client.get_routes(None))[0] == []
        # CA rollover: the bundle gains the new CA, then the leaf moves to it.
        ca_file.write_bytes(old_ca.cert_pem + new_ca.cert_pem)
        moved = new_ca.issue(["localhost"], tmp_path / "moved")
        _swap(leaf.key_file, moved.key_file)
        _swap(leaf.cert_file, moved.cert_file)
        assert serving.reload_if_changed()
        await client.close()  # drop pooled connections: the next call handshakes anew
        now[0] += 11.0
        assert (await client.get_routes(None))[0] == []
        # A proxy that never re-read its CA cannot verify the new leaf.
        stale = ControlPlaneClient(
            f"https://localhost:{port}", TokenFile(tmp_path / "token"), ssl_context=client_context(
                old_ca.cert_pem.decode()
            )
        )  # fmt: skip
        try:
            with pytest.raises(CredentialUnavailable):
                await stale.get_routes(None)
        finally:
            await stale.close()
    finally:
        await client.close()
        await runner.cleanup()


def test_ca_configmap_is_mounted_into_the_proxy_and_named_by_its_env():
    from controlplane.injector import review
    from controlplane.injector_spec import InjectorSettings

    from .admission import container, patched, pod, review_of

    settings = InjectorSettings.build({"SESAME_INJECTOR_CONTROL_PLANE_CA_CONFIGMAP": "sesame-cp-ca"})
    doc = review_of(pod({"name": "app", "image": "x"}, annotations={"sesame.dev/inject": "true"}))
    result = patched(doc, review(doc, settings, namespace_opted_in=False)[0])
    proxy = container(result, "sesame-proxy")
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert env["SESAME_CONTROL_PLANE_CA"] == "/var/run/sesame/cp-ca/ca.crt"
    assert {"name": "sesame-cp-ca", "mountPath": "/var/run/sesame/cp-ca", "readOnly": True} in proxy[
        "volumeMounts"
    ]
    [volume] = [v for v in result["spec"]["volumes"] if v["name"] == "sesame-cp-ca"]
    assert volume["configMap"] == {"name": "sesame-cp-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert "sesame-cp-ca" not in {m["name"] for m in container(result, "app")["volumeMounts"]}
