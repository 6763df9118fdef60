"""sesamectl against a real `sesame-controlplane serve` subprocess, configured only through env."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devkit.controlplane_server import control_plane_process


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with control_plane_process(tmp_path_factory.mktemp("cli") / "cp.db") as cp:
        yield cp


def ctl(
    server, *args: str, key: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"SESAME_URL": server.url, "SESAME_API_KEY": key or server.owner_key, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "controlplane.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_workload_create_list_get_delete(server):
    made = ctl(
        server, "workloads", "create", "billing", "--namespace", "prod", "--service-account", "billing-sa"
    )
    assert made.returncode == 0, made.stderr
    wl_id = next(line.split()[1] for line in made.stdout.splitlines() if line.startswith("id"))
    table = ctl(server, "workloads", "list")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["ID", "NAME", "NAMESPACE"]
    assert any(wl_id in row and "billing-sa" in row for row in rows)
    as_json = json.loads(ctl(server, "--json", "workloads", "get", wl_id).stdout)
    assert as_json["service_account"] == "billing-sa"
    assert ctl(server, "workloads", "delete", wl_id).returncode == 0
    gone = ctl(server, "workloads", "get", wl_id)
    assert gone.returncode == 1
    assert gone.stderr.strip().splitlines() == [f"sesamectl: error: 404 not_found: no workload {wl_id}"]


def test_every_resource_can_be_created_listed_and_deleted(server):
    target = ctl(server, "--json", "targets", "create", "stripe", "--set", "host=api.stripe.com")
    assert target.returncode == 0, target.stderr
    cluster = ctl(server, "--json", "clusters", "create", "prod", "--set", "issuer=https://k8s.example")
    assert cluster.returncode == 0, cluster.stderr
    provider = ctl(
        server,
        "--json",
        "credential-providers",
        "create",
        "stripe-key",
        "--data-file",
        "-",
        stdin=json.dumps({"type": "static", "config": {"value": "sk_test_secret"}}),
    )
    assert provider.returncode == 0, provider.stderr
    assert "sk_test_secret" not in provider.stdout
    pid = json.loads(provider.stdout)["id"]
    policy = ctl(
        server,
        "--json",
        "policies",
        "create",
        "--set",
        f"provider_id={pid}",
        "--set",
        "effect=allow",
        "--set",
        "max_ttl_seconds=600",
    )
    assert policy.returncode == 0, policy.stderr
    assert json.loads(policy.stdout)["max_ttl_seconds"] == 600
    rotated = ctl(
        server, "credential-providers", "rotate", pid, "--data-file", "-", stdin='{"value": "sk_new"}'
    )
    assert rotated.returncode == 0, rotated.stderr
    for resource, made in (
        ("policies", policy),
        ("targets", target),
        ("clusters", cluster),
        ("credential-providers", provider),
    ):
        rid = json.loads(made.stdout)["id"]
        assert rid in ctl(server, resource, "list").stdout
        assert ctl(server, resource, "delete", rid).returncode == 0
        assert rid not in ctl(server, resource, "list", "--all").stdout


def test_api_keys_and_permissions(server):
    made = json.loads(ctl(server, "--json", "api-keys", "create", "ci", "--role", "viewer").stdout)
    assert made["key"].startswith("ses_")
    denied = ctl(server, "targets", "create", "x", "--set", "host=x.example", key=made["key"])
    assert denied.returncode == 1 and "403 forbidden" in denied.stderr
    assert "audit.prune" in ctl(server, "permissions").stdout
    assert ctl(server, "api-keys", "delete", made["id"]).returncode == 0
    revoked = ctl(server, "workloads", "list", key=made["key"])
    assert revoked.returncode == 1 and "401 unauthorized" in revoked.stderr


def test_audit_with_filters_verify_and_export(server):
    ctl(server, "workloads", "create", "audited", "--namespace", "ns", "--service-account", "audited")
    listing = ctl(server, "audit", "--type", "workload.created")
    assert listing.returncode == 0 and "workload.created" in listing.stdout
    assert "api_key.created" not in listing.stdout
    verify = json.loads(ctl(server, "--json", "audit", "verify").stdout)
    assert verify["ok"] is True
    export = ctl(server, "audit", "export", "--format", "csv", "--type", "workload.created")
    assert export.stdout.startswith("id,timestamp,type")


def test_errors_are_one_line_with_non_zero_exit(server):
    bad = ctl(server, "workloads", "create", "x", "--namespace", "Not_Valid", "--service-account", "sa")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "sesamectl: error: 400 invalid_request: attestation.namespace has an invalid format "
        "(field: attestation.namespace)"
    ]
    unreachable = subprocess.run(
        [sys.executable, "-m", "controlplane.cli", "workloads", "list"],
        env={"SESAME_URL": "http://127.0.0.1:9", "SESAME_API_KEY": "ses_x", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 1 and len(unreachable.stderr.strip().splitlines()) == 1
    missing = subprocess.run(
        [sys.executable, "-m", "controlplane.cli", "workloads", "list"],
        env={},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "SESAME_URL" in missing.stderr
