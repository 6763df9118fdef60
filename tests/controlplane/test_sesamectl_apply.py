"""`sesamectl apply/diff/export` against a real `sesame-controlplane serve` subprocess.

Secrets by Kubernetes Secret reference are read from tests/k8s/fake_apiserver.py, which serves the
kube-apiserver's exact Secret wire format (no apiserver runs here).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devkit.controlplane_server import LOOPBACK_ENV, control_plane_process
from tests.k8s.fake_apiserver import fake_apiserver

WALKTHROUGH = Path(__file__).resolve().parents[2] / "examples" / "walkthrough"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Every sesamectl run lists each kind: more requests than the default 120 a minute per key.
    env = {**LOOPBACK_ENV, "SESAME_RATE_LIMIT": "100000"}
    with control_plane_process(tmp_path_factory.mktemp("apply") / "cp.db", env=env) as cp:
        yield cp


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    with fake_apiserver(tmp_path_factory.mktemp("kube")) as (state, kubeconfig):
        for name, value in (("payments-api", "sk-payments-123"), ("ledger-api", "sk-ledger-456")):
            state.secrets[("sesame-system", name)] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": "sesame-system"},
                "data": {"api-key": base64.b64encode(value.encode()).decode()},
            }
        yield state, kubeconfig


def ctl(server, kube, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {
        "SESAME_URL": server.url,
        "SESAME_API_KEY": server.owner_key,
        "PATH": "/usr/bin:/bin",
        "KUBECONFIG": str(kube[1]),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "controlplane.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def edit(path: Path, kind: str, name: str, **spec) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            doc["spec"].update(spec)
    path.write_text(yaml.safe_dump_all(docs))


def test_apply_diff_change_and_prune(server, kube, tmp_path):
    config = tmp_path / "config"
    shutil.copytree(WALKTHROUGH, config)

    before = ctl(server, kube, "diff", "-f", str(config))
    assert before.returncode == 1, before.stderr
    assert "+ Cluster/prod" in before.stdout and "+ Policy/checkout-ledger" in before.stdout

    applied = ctl(server, kube, "apply", "-f", str(config))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [
        "Cluster/prod created",
        "Target/payments-api created",
        "Target/ledger-api created",
        "CredentialProvider/payments-api-key created",
        "CredentialProvider/ledger-api-key created",
        "Workload/checkout created",
        "Policy/checkout-payments created",
        "Policy/checkout-ledger created",
    ]
    assert "sk-payments-123" not in applied.stdout + applied.stderr
    # The secret came from the Kubernetes Secret and was stored write-only.
    provider = json.loads(
        ctl(server, kube, "-o", "json", "credential-providers", "get", "payments-api-key").stdout
    )
    assert provider["secret_fields"] == ["value"] and provider["config"] == {}
    assert provider["labels"] == {"sesame.dev/managed-by": "sesamectl"}
    # The policy refers to the others by id, the table shows their names.
    policy = json.loads(ctl(server, kube, "-o", "json", "policies", "get", "checkout-payments").stdout)
    workload = json.loads(ctl(server, kube, "-o", "json", "workloads", "get", "checkout").stdout)
    assert policy["workload_id"] == workload["id"] and workload["id"].startswith("wl_")
    table = ctl(server, kube, "policies", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "NAME", "WORKLOAD", "TARGET", "PROVIDER", "EFFECT", "MAX_TTL_SECONDS"]
    assert any(
        row.split()[1:6] == ["checkout-ledger", "checkout", "ledger-api", "ledger-api-key", "deny"]
        for row in table[1:]
    )

    again = ctl(server, kube, "diff", "-f", str(config))
    assert (again.returncode, again.stdout) == (0, ""), again.stderr
    reapplied = ctl(server, kube, "apply", "-f", str(config))
    assert reapplied.returncode == 0 and all(
        line.endswith(" unchanged") for line in reapplied.stdout.splitlines()
    )
    assert kube[0].writes() == []  # only read the Secrets

    # A change: the diff names the field and exits 1; apply makes it; then nothing is left to do.
    edit(config / "30-payments-api.yaml", "Target", "payments-api", port=8443)
    edit(config / "20-workload.yaml", "Workload", "checkout", status="revoked")
    changed = ctl(server, kube, "diff", "-f", str(config))
    assert changed.returncode == 1
    assert changed.stdout.splitlines() == [
        "~ Target/payments-api",
        "    spec.port: 443 -> 8443",
        "~ Workload/checkout",
        '    spec.status: "active" -> "revoked"',
    ]
    assert ctl(server, kube, "apply", "-f", str(config)).returncode == 0
    assert (
        json.loads(ctl(server, kube, "-o", "json", "targets", "get", "payments-api").stdout)["port"] == 8443
    )
    assert (
        json.loads(ctl(server, kube, "-o", "json", "workloads", "get", "checkout").stdout)["status"]
        == "revoked"
    )
    assert ctl(server, kube, "diff", "-f", str(config)).returncode == 0

    # An object made by hand is not managed: --prune leaves it alone.
    manual = ctl(server, kube, "targets", "create", "by-hand", "--set", "host=by-hand.example")
    assert manual.returncode == 0, manual.stderr

    # The ledger documents go away: without --prune nothing changes; with it, their objects go.
    (config / "40-ledger-api.yaml").unlink()
    assert ctl(server, kube, "diff", "-f", str(config)).returncode == 0
    pruning = ctl(server, kube, "diff", "-f", str(config), "--prune")
    assert pruning.returncode == 1
    assert pruning.stdout.splitlines() == [
        "- Policy/checkout-ledger (prune)",
        "- CredentialProvider/ledger-api-key (prune)",
        "- Target/ledger-api (prune)",
    ]
    pruned = ctl(server, kube, "apply", "-f", str(config), "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert [line for line in pruned.stdout.splitlines() if not line.endswith("unchanged")] == [
        "Policy/checkout-ledger pruned",
        "CredentialProvider/ledger-api-key pruned",
        "Target/ledger-api pruned",
    ]
    assert ctl(server, kube, "targets", "get", "ledger-api").returncode == 1
    assert ctl(server, kube, "targets", "get", "by-hand").returncode == 0
    assert ctl(server, kube, "diff", "-f", str(config), "--prune").returncode == 0

    # export prints documents that describe the same state: diffing them changes nothing.
    exported = ctl(server, kube, "export")
    assert exported.returncode == 0, exported.stderr
    docs = list(yaml.safe_load_all(exported.stdout))
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} >= {
        ("Cluster", "prod"),
        ("Workload", "checkout"),
        ("Target", "by-hand"),
        ("Policy", "checkout-payments"),
    }
    provider_doc = next(d for d in docs if d["metadata"]["name"] == "payments-api-key")
    assert provider_doc["spec"]["secrets"] == {"value": {"fromEnv": "PAYMENTS_API_KEY_VALUE"}}
    (tmp_path / "exported.yaml").write_text(exported.stdout)
    assert ctl(server, kube, "diff", "-f", str(tmp_path / "exported.yaml")).returncode == 1  # + managed label
    assert ctl(server, kube, "apply", "-f", str(tmp_path / "exported.yaml")).returncode == 0
    assert ctl(server, kube, "diff", "-f", str(tmp_path / "exported.yaml")).returncode == 0


def test_immutable_change_is_refused_before_anything_is_written(server, kube, tmp_path):
    docs = tmp_path / "wl.yaml"
    wl = {
        "apiVersion": "sesame.dev/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": "fixed"},
        "spec": {"namespace": "a", "service_account": "sa"},
    }
    target = {
        "apiVersion": "sesame.dev/v1alpha1",
        "kind": "Target",
        "metadata": {"name": "fixed-t"},
        "spec": {"host": "fixed.example"},
    }
    docs.write_text(yaml.safe_dump_all([wl]))
    assert ctl(server, kube, "apply", "-f", str(docs)).returncode == 0
    wl["spec"]["namespace"] = "b"
    docs.write_text(yaml.safe_dump_all([wl, target]))
    diff = ctl(server, kube, "diff", "-f", str(docs))
    assert diff.returncode == 1
    assert "! Workload/fixed" in diff.stdout and "spec.namespace cannot change in place" in diff.stdout
    refused = ctl(server, kube, "apply", "-f", str(docs))
    assert refused.returncode == 1 and "spec.namespace cannot change in place" in refused.stderr
    assert ctl(server, kube, "targets", "get", "fixed-t").returncode == 1  # nothing was written


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ({"value": "sk-inline"}, "never inline"),
        ({"value": {"fromEnv": "NOT_SET_ANYWHERE"}}, "environment variable NOT_SET_ANYWHERE"),
        ({"value": {"fromFile": "missing.txt"}}, "cannot read secret file"),
        (
            {"value": {"secretKeyRef": {"name": "absent", "key": "k"}}},
            "cannot read Secret default/absent: 404",
        ),
        (
            {
                "value": {
                    "secretKeyRef": {"name": "payments-api", "namespace": "sesame-system", "key": "nope"}
                }
            },
            "has no key nope",
        ),
    ],
)
def test_secret_sources_fail_clearly(server, kube, tmp_path, secrets, message):
    doc = {
        "apiVersion": "sesame.dev/v1alpha1",
        "kind": "CredentialProvider",
        "metadata": {"name": "bad"},
        "spec": {"type": "static", "secrets": secrets},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    out = ctl(server, kube, "apply", "-f", str(tmp_path / "p.yaml"))
    assert out.returncode in (1, 2) and message in out.stderr, out.stderr
    assert "sk-inline" not in out.stderr
    assert ctl(server, kube, "credential-providers", "get", "bad").returncode == 1


def test_secrets_from_file_and_env(server, kube, tmp_path):
    (tmp_path / "pw.txt").write_text("file-secret\n")
    doc = {
        "apiVersion": "sesame.dev/v1alpha1",
        "kind": "CredentialProvider",
        "metadata": {"name": "basic"},
        "spec": {
            "type": "static",
            "config": {"username": "u"},
            "secrets": {"password": {"fromFile": "pw.txt"}},
        },
    }
    env_doc = {
        "apiVersion": "sesame.dev/v1alpha1",
        "kind": "CredentialProvider",
        "metadata": {"name": "env"},
        "spec": {"type": "static", "secrets": {"value": {"fromEnv": "MY_TOKEN"}}},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump_all([doc, env_doc]))
    out = ctl(server, kube, "apply", "-f", str(tmp_path / "p.yaml"), env={"MY_TOKEN": "env-secret"})
    assert out.returncode == 0, out.stderr
    for name, fields in (("basic", ["password"]), ("env", ["value"])):
        got = json.loads(ctl(server, kube, "-o", "json", "credential-providers", "get", name).stdout)
        assert got["secret_fields"] == fields


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"apiVersion": "v1", "kind": "Target", "metadata": {"name": "x"}, "spec": {}}, "apiVersion must be"),
        (
            {"apiVersion": "sesame.dev/v1alpha1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}},
            "kind must be",
        ),
        (
            {"apiVersion": "sesame.dev/v1alpha1", "kind": "Target", "metadata": {}, "spec": {}},
            "metadata.name",
        ),
        ({"apiVersion": "sesame.dev/v1alpha1", "kind": "Target", "metadata": {"name": "x"}}, "spec must be"),
    ],
)
def test_malformed_documents_are_usage_errors(server, kube, tmp_path, doc, message):
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(doc))
    out = ctl(server, kube, "diff", "-f", str(tmp_path / "d.yaml"))
    assert out.returncode == 2 and message in out.stderr


def test_names_are_accepted_where_ids_are(server, kube):
    made = ctl(server, kube, "-o", "json", "targets", "create", "named-target", "--set", "host=named.example")
    tid = json.loads(made.stdout)["id"]
    by_name = json.loads(ctl(server, kube, "-o", "json", "targets", "get", "named-target").stdout)
    assert by_name["id"] == tid
    upd = ctl(server, kube, "-o", "yaml", "targets", "update", "named-target", "--set", "port=444")
    assert upd.returncode == 0 and yaml.safe_load(upd.stdout)["port"] == 444
    assert ctl(server, kube, "targets", "delete", "named-target").returncode == 0
    gone = ctl(server, kube, "targets", "get", tid)
    assert gone.stderr.strip() == f"sesamectl: error: 404 not_found: no target {tid}"
