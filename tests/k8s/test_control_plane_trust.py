"""An injected proxy trusts the chart's control plane certificate, from chart values to TLS handshake.

The chain under test: the chart renders the serving certificate Secret and points the control
plane's `SESAME_INJECTOR_CONTROL_PLANE_CA` at its `ca.crt` (resolved here as the kubelet would);
the webhook copies it into the proxy's `SESAME_CONTROL_PLANE_CA`; the proxy's own flag parser
turns the injected env into settings whose TLS context verifies the control plane's certificate
under the host name of the injected `SESAME_CONTROL_PLANE` URL. No cluster runs here: the
"control plane" end is a TLS server holding the rendered certificate and key.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from controlplane.config import Config
from controlplane.injector import review
from proxy.config import ProxySettings, add_run_arguments
from proxy.tls import client_context

from .admission import container, patched, pod, review_of
from .chart import FULLNAME, container_env, find, installed, literal_env, render
from .helm_binary import helm_binary
from .tls_ok_server import tls_ok_server


@pytest.fixture(scope="session")
def helm() -> Path:
    return helm_binary()


def _injected_proxy_env(helm: Path, values: str | None) -> tuple[dict[str, str], dict[str, bytes]]:
    """(the literal env of the injected proxy container, the TLS Secret's files as the chart's
    bootstrap Job created them)."""
    docs = installed(helm, values)
    deployment = find(docs, "Deployment")
    secret = find(docs, "Secret", f"{FULLNAME}-webhook-tls")
    files = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    ref = container_env(deployment)["SESAME_INJECTOR_CONTROL_PLANE_CA"]["secretKeyRef"]
    assert ref["name"] == f"{FULLNAME}-webhook-tls"
    env = {**literal_env(deployment), "SESAME_INJECTOR_CONTROL_PLANE_CA": files[ref["key"]].decode()}
    config = Config.build({}, env)
    doc = review_of(pod({"name": "app", "image": "x"}, annotations={"sesame.dev/inject": "true"}))
    result = patched(doc, review(doc, config.injector, namespace_opted_in=False)[0])
    proxy = container(result, "sesame-proxy")
    return {e["name"]: e["value"] for e in proxy["env"] if "value" in e}, files


def _proxy_settings(env: dict[str, str]) -> ProxySettings:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser, env)
    return ProxySettings.from_namespace(parser.parse_args([]))


@pytest.mark.parametrize("values", [None, "values-explicit.yaml"], ids=["default", "explicit"])
async def test_injected_proxy_verifies_the_charts_control_plane_certificate(helm: Path, values, tmp_path):
    env, files = _injected_proxy_env(helm, values)
    settings = _proxy_settings(env)
    assert settings.control_plane_ca == files["ca.crt"].decode().strip()
    url = urlsplit(settings.control_plane)
    assert url.scheme == "https"

    async with tls_ok_server(files["tls.crt"], files["tls.key"], tmp_path) as port:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(settings.control_plane_ca), server_hostname=url.hostname
        )
        assert await reader.read() == b"ok"
        writer.close()
        # Without the injected CA the same handshake fails: the system roots do not know the chart's CA.
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(None), server_hostname=url.hostname
            )


def test_without_a_control_plane_ca_the_proxy_gets_no_ca_variable(helm: Path):
    docs = render(helm)
    env = literal_env(find(docs, "Deployment"))  # the optional secretKeyRef unresolved
    config = Config.build({}, env)
    doc = review_of(pod({"name": "app", "image": "x"}, annotations={"sesame.dev/inject": "true"}))
    result = patched(doc, review(doc, config.injector, namespace_opted_in=False)[0])
    names = [e["name"] for e in container(result, "sesame-proxy")["env"]]
    assert "SESAME_CONTROL_PLANE" in names and "SESAME_CONTROL_PLANE_CA" not in names
