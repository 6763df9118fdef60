"""A client generated from the served /openapi.json (openapi-python-client) drives the demo flow:
register cluster, workload, target, provider and policy, exchange a service-account token, read
the audit trail and verify it. Every answer must parse into the generated models: the document
describes what the server sends."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devkit.controlplane_server import LOOPBACK_ENV, control_plane_process
from devkit.issuer import ClusterIssuer

GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture
def generated(tmp_path):
    """(control plane, its cluster issuer, the generated client package)."""
    with (
        ClusterIssuer.in_thread() as issuer,
        control_plane_process(tmp_path / "cp.db", env=LOOPBACK_ENV) as cp,
    ):
        document = httpx.get(f"{cp.url}/openapi.json", timeout=10).json()
        # openapi-python-client 0.29 emits code that does not import `Unset` for an operation with two
        # request content types: keep token exchange's JSON body (its form body is the same schema).
        exchange = document["paths"]["/v1/token-exchange"]["post"]["requestBody"]["content"]
        assert set(exchange) == {"application/json", "application/x-www-form-urlencoded"}
        del exchange["application/x-www-form-urlencoded"]
        (tmp_path / "openapi.json").write_text(json.dumps(document))
        out = subprocess.run(
            [str(GENERATOR), "generate", "--path", str(tmp_path / "openapi.json"), "--meta", "none",
             "--output-path", str(tmp_path / "sesame_generated")],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Warning" not in out.stdout + out.stderr, out.stdout + out.stderr  # every operation generated
        sys.path.insert(0, str(tmp_path))
        try:
            yield cp, issuer, importlib.import_module("sesame_generated")
        finally:
            sys.path.remove(str(tmp_path))
            for name in [
                n for n in sys.modules if n == "sesame_generated" or n.startswith("sesame_generated.")
            ]:
                del sys.modules[name]


def test_generated_client_drives_the_demo_flow(generated):
    cp, issuer, pkg = generated
    api = importlib.import_module("sesame_generated.api")
    models = importlib.import_module("sesame_generated.models")
    groups = (
        "clusters",
        "workloads",
        "targets",
        "credential_providers",
        "policies",
        "audit",
        "token_exchange",
    )
    mod = {
        path.stem: importlib.import_module(f"sesame_generated.api.{group}.{path.stem}")
        for group in (*groups, "api_keys")
        for path in Path(api.__file__).parent.joinpath(group).glob("[!_]*.py")
    }
    admin = pkg.AuthenticatedClient(base_url=cp.url, token=cp.owner_key, raise_on_unexpected_status=True)

    cluster = mod["create_cluster"].sync(
        client=admin, body=models.CreateClusterBody(name="demo-cluster", issuer=issuer.issuer)
    )
    assert isinstance(cluster, models.Cluster) and cluster.id.startswith("cl_")
    workload = mod["create_workload"].sync(
        client=admin,
        body=models.CreateWorkloadBody(
            name="checkout",
            attestation=models.CreateWorkloadBodyAttestation(
                type_=models.CreateWorkloadBodyAttestationType.KUBERNETES_SERVICE_ACCOUNT,
                namespace="shop",
                service_account="checkout",
                cluster="demo-cluster",
            ),
        ),
    )
    assert isinstance(workload, models.WorkloadCreated) and workload.status == "active"
    target = mod["create_target"].sync(
        client=admin, body=models.CreateTargetBody(name="payments-api", host="api.payments.example")
    )
    assert isinstance(target, models.Target) and target.audience == "https://api.payments.example"
    provider = mod["create_credential_provider"].sync(
        client=admin,
        body=models.CreateCredentialProviderBodyType0(
            name="payments-api-key", type_="static", config={"value": "sk-generated-123"}
        ),
    )
    assert isinstance(provider, models.CredentialProvider) and provider.secret_fields == ["value"]
    policy = mod["create_policy"].sync(
        client=admin,
        body=models.CreatePolicyBody(
            name="checkout-payments",
            workload_id="checkout",  # names where ids are taken
            target_id="payments-api",
            provider_id="payments-api-key",
            effect=models.CreatePolicyBodyEffect.ALLOW,
        ),
    )
    assert isinstance(policy, models.Policy) and policy.workload_id == workload.id

    fetched = mod["get_workload"].sync(client=admin, id="checkout")
    assert (
        isinstance(fetched, models.Workload)
        and fetched.id == workload.id
        and fetched.cluster == "demo-cluster"
    )
    listed = mod["list_policies"].sync(client=admin)
    assert isinstance(listed, models.PolicyList) and [p.id for p in listed.data] == [policy.id]
    assert listed.next_cursor is None

    public = pkg.Client(base_url=cp.url, raise_on_unexpected_status=True)
    credential = mod["exchange_token"].sync(
        client=public,
        body=models.ExchangeTokenBody(
            subject_token=issuer.mint(namespace="shop", service_account="checkout"),
            subject_token_type=models.ExchangeTokenBodySubjectTokenType.URNIETFPARAMSOAUTHTOKEN_TYPEJWT,
            audience=target.audience,
        ),
    )
    assert isinstance(credential, models.IssuedCredential)
    assert credential.access_token == "sk-generated-123" and credential.expires_in > 0

    events = mod["list_audit_events"].sync(client=admin)
    assert isinstance(events, models.AuditEventPage)
    assert {"cluster.created", "workload.created", "policy.created", "token.issued"} <= {
        e.type_ for e in events.events
    }
    verification = mod["verify_audit_chain"].sync(client=admin)
    assert isinstance(verification, models.AuditVerification) and verification.ok is True

    key = mod["create_api_key"].sync(client=admin, body=models.CreateApiKeyBody(name="ci"))
    assert isinstance(key, models.ApiKeyCreated) and key.created_at and key.key.startswith("ses_")
    keys = mod["list_api_keys"].sync(client=admin)
    assert isinstance(keys, models.ApiKeyList) and any(
        k.id == key.id and k.last_used_at is None for k in keys.data
    )
