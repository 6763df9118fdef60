"""The webhook served by the real control plane app over real TLS, as kube-apiserver calls it.

kube-apiserver cannot run here; the client posts the exact AdmissionReview wire format it sends,
verifies the server certificate against the CA (the webhook's caBundle) for the Service DNS name,
and the audit log is read back through /v1/audit.
"""

from __future__ import annotations

import base64
import json
import ssl
from dataclasses import dataclass

import aiohttp
import jsonpatch
import pytest

from controlplane.api_keys import generate_key
from controlplane.app import create_app
from controlplane.config import Config
from controlplane.exchange_settings import ExchangeSettings
from controlplane.injector_spec import InjectorSettings
from devkit.certs import DevCA
from devkit.controlplane_server import serving
from devkit.upstream import server_context

from .admission import deployment_review, pod, review_of, validate_pod

SERVICE_DNS = "sesame.sesame-system.svc"


@dataclass
class Webhook:
    url: str
    session: aiohttp.ClientSession
    owner: str

    async def post(self, body: bytes | dict, *, scope: str | None = None, path: str = "") -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        params = {"scope": scope} if scope else {}
        async with self.session.post(
            f"{self.url}/v1/admission/mutate{path}",
            data=data,
            params=params,
            headers={"Content-Type": "application/json"},
            server_hostname=SERVICE_DNS,
        ) as resp:
            return resp.status, await resp.json()

    async def audit(self, event_type: str) -> list[dict]:
        async with self.session.get(
            f"{self.url}/v1/audit",
            params={"type": event_type},
            server_hostname=SERVICE_DNS,
            headers={"Authorization": f"Bearer {self.owner}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            return (await resp.json())["events"]


@pytest.fixture
async def webhook(tmp_path):
    ca = DevCA("sesame webhook test CA")
    server = ca.issue([SERVICE_DNS, "127.0.0.1"], tmp_path / "tls")
    owner = generate_key()
    config = Config(
        db_path=tmp_path / "cp.db",
        listen_port=0,
        kek=b"k" * 32,
        bootstrap_api_key=owner,
        tls_cert=server.cert_file,
        tls_key=server.key_file,
        injector=InjectorSettings(proxy_image="registry.example.com/sesame-proxy:0.1.0"),
        exchange=ExchangeSettings(issuer_url=f"https://{SERVICE_DNS}"),  # port 0: nothing to derive
    )
    client_ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    async with (
        serving(create_app(config), ssl_context=server_context(server.cert_file, server.key_file)) as port,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx)) as session,
    ):
        yield Webhook(f"https://127.0.0.1:{port}", session, owner)


async def test_pod_is_injected_over_https_and_audited(webhook: Webhook):
    doc = deployment_review()
    status, body = await webhook.post(doc)
    assert status == 200
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    answer = body["response"]
    assert answer["uid"] == doc["request"]["uid"] and answer["allowed"] is True
    result = jsonpatch.apply_patch(doc["request"]["object"], json.loads(base64.b64decode(answer["patch"])))
    validate_pod(result)
    assert result["spec"]["initContainers"][0]["image"] == "registry.example.com/sesame-proxy:0.1.0"

    [event] = await webhook.audit("admission.injected")
    assert event["outcome"] == "success" and event["actor"] == "admission_webhook"
    extra = event["extra"] if isinstance(event["extra"], dict) else json.loads(event["extra"])
    assert extra["namespace"] == "payments" and extra["admission_uid"] == doc["request"]["uid"]
    assert extra["requested_by"] == "system:serviceaccount:kube-system:replicaset-controller"


async def test_pod_that_cannot_be_injected_is_denied_and_audited(webhook: Webhook):
    doc = review_of(pod({"name": "sesame-init", "image": "x"}, annotations={"sesame.dev/inject": "true"}))
    status, body = await webhook.post(doc)
    assert status == 200
    assert body["response"]["allowed"] is False
    assert "container name 'sesame-init'" in body["response"]["status"]["message"]
    [event] = await webhook.audit("admission.denied")
    assert event["outcome"] == "denied"
    assert event["reason"] == "injection_failed"
    assert "sesame-init" in event["extra"]["message"]


async def test_namespace_scope_injects_unannotated_pods_and_pod_scope_does_not(webhook: Webhook):
    plain = review_of(pod({"name": "app", "image": "example/app:1"}))
    _, body = await webhook.post(plain, scope="namespace")
    assert "patch" in body["response"]
    _, body = await webhook.post(plain, path="/namespace")  # what the chart's namespace webhook calls
    assert "patch" in body["response"]
    _, body = await webhook.post(plain, scope="pod")
    assert body["response"] == {"uid": plain["request"]["uid"], "allowed": True}
    status, body = await webhook.post(plain, path="/cluster")
    assert (status, body["field"]) == (400, "scope")
    assert await webhook.audit("admission.skipped") == []  # pods that never asked are not audited


async def test_opt_out_is_audited_as_skipped(webhook: Webhook):
    doc = review_of(pod({"name": "app", "image": "x"}, annotations={"sesame.dev/inject": "false"}))
    _, body = await webhook.post(doc, scope="namespace")
    assert body["response"]["allowed"] is True and "patch" not in body["response"]
    [event] = await webhook.audit("admission.skipped")
    assert (event["outcome"], event["reason"]) == ("skipped", "opted_out")


@pytest.mark.parametrize(
    ("body", "scope", "field"),
    [
        (b"{not json", None, None),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', None, "request"),
        (b"[]", None, None),
        (b"{}", "cluster", "scope"),
    ],
)
async def test_malformed_review_is_a_400_json_error(webhook: Webhook, body, scope, field):
    status, answer = await webhook.post(body, scope=scope)
    assert status == 400
    assert answer["error"] == "invalid_request" and answer["message"]
    assert answer.get("field") == field


async def test_webhook_needs_no_api_key_and_certificate_names_the_service(webhook: Webhook):
    """The apiserver presents no credential; TLS verification used the Service DNS name."""
    status, _ = await webhook.post(review_of(pod({"name": "a", "image": "b"})))
    assert status == 200
    bad = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl.create_default_context()))
    try:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await bad.post(f"{webhook.url}/v1/admission/mutate", data=b"{}", server_hostname=SERVICE_DNS)
    finally:
        await bad.close()
