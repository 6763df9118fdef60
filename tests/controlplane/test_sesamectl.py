"""sesamectl against a real `sesame-controlplane serve` subprocess, configured only through env."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from devkit.certs import DevCA
from devkit.controlplane_server import LOOPBACK_ENV, control_plane_process
from devkit.issuer import ClusterIssuer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with control_plane_process(tmp_path_factory.mktemp("cli") / "cp.db", env=LOOPBACK_ENV) as cp:
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


def _api(server, method: str, path: str, body=None, token: str | None = None, expect: int = 201):
    headers = {"Authorization": f"Bearer {token or server.owner_key}"}
    resp = httpx.request(method, server.url + path, json=body, headers=headers, timeout=30)
    assert resp.status_code == expect, (path, resp.status_code, resp.text)
    return resp.json() if resp.content else None


def test_approvals_are_listed_and_decided_and_fleet_views_are_shown(server):
    """A require_approval exchange, a heartbeat and observations, then sesamectl reads and decides."""
    with ClusterIssuer.in_thread() as issuer:
        _api(server, "POST", "/v1/clusters", {"name": "ctl-local", "issuer": issuer.issuer})
        attestation = {
            "type": "kubernetes-service-account",
            "namespace": "ctl",
            "service_account": "ctl-app",
            "cluster": "ctl-local",
        }
        wl = _api(server, "POST", "/v1/workloads", {"name": "ctl-app", "attestation": attestation})
        tg = _api(
            server, "POST", "/v1/targets", {"name": "ctl-api", "host": "ctl.example", "audience": "ctl"}
        )
        pr = _api(
            server,
            "POST",
            "/v1/credential-providers",
            {"name": "ctl-key", "type": "static", "config": {"value": "ctl-secret-value"}},
        )
        _api(
            server,
            "POST",
            "/v1/policies",
            {
                "workload_id": wl["id"],
                "target_id": tg["id"],
                "provider_id": pr["id"],
                "effect": "require_approval",
            },
        )
        token = issuer.mint(namespace="ctl", service_account="ctl-app", pod_name="ctl-app-0")
        exchange = {
            "subject_token": token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "audience": "ctl",
        }
        pending = _api(server, "POST", "/v1/token-exchange", exchange, token=token, expect=202)
        approval_id = pending["approval_id"]
        _api(server, "POST", "/v1/proxy/heartbeat", {"pod": "ctl-app-0", "version": "9.9"}, token, 204)
        observed = [{"host": "unknown.example", "port": 443, "count": 3, "governed": False}]
        _api(server, "POST", "/v1/proxy/observations", observed, token, 204)

        listed = ctl(server, "approvals", "list", "--filter", "status=pending")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines()[0].split()[:2] == ["ID", "STATUS"]
        assert any(approval_id in row and "pending" in row for row in listed.stdout.splitlines())
        approved = ctl(server, "--json", "approvals", "approve", approval_id, "--window-seconds", "600")
        assert approved.returncode == 0, approved.stderr
        assert json.loads(approved.stdout)["status"] == "approved"
        assert approval_id not in ctl(server, "approvals", "list", "--filter", "status=pending").stdout
        issued = _api(server, "POST", "/v1/token-exchange", exchange, token=token, expect=200)
        assert issued["access_token"] == "ctl-secret-value"
        missing = ctl(server, "approvals", "deny", "apr_missing")
        assert missing.returncode == 1 and "404 not_found" in missing.stderr

    proxies = ctl(server, "proxies", "list")
    assert proxies.returncode == 0, proxies.stderr
    assert any("ctl-app-0" in row and "9.9" in row for row in proxies.stdout.splitlines())
    discovery = json.loads(ctl(server, "--json", "discovery", "list", "--filter", "governed=false").stdout)
    assert {"host": "unknown.example", "port": 443, "count": 3, "governed": False}.items() <= discovery[
        0
    ].items()
    bad_filter = ctl(server, "discovery", "list", "--filter", "governed")
    assert bad_filter.returncode == 2 and "KEY=VALUE" in bad_filter.stderr
    events = ctl(server, "--json", "audit", "--type", "approval.approved")
    assert approval_id in events.stdout


def test_signing_keys_rotate_needs_the_owner(server):
    jwks_before = {k["kid"] for k in httpx.get(server.url + "/v1/jwks", timeout=30).json()["keys"]}
    rotated = ctl(server, "--json", "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    kid = json.loads(rotated.stdout)["kid"]
    jwks_after = {k["kid"] for k in httpx.get(server.url + "/v1/jwks", timeout=30).json()["keys"]}
    assert kid in jwks_after and kid not in jwks_before
    admin_key = json.loads(ctl(server, "--json", "api-keys", "create", "rot", "--role", "admin").stdout)[
        "key"
    ]
    denied = ctl(server, "keys", "rotate", key=admin_key)
    assert denied.returncode == 1 and "403 forbidden" in denied.stderr


def test_https_control_plane_is_trusted_through_ca_cert(tmp_path):
    ca = DevCA("sesamectl test CA")
    cert = ca.issue(["127.0.0.1"], tmp_path / "tls")
    ca_file = ca.write_ca(tmp_path / "ca.pem")
    args = ("--tls-cert", str(cert.cert_file), "--tls-key", str(cert.key_file))
    with control_plane_process(tmp_path / "cp.db", args=args) as tls_server:
        assert tls_server.url.startswith("https://")
        untrusted = ctl(tls_server, "workloads", "list")
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        assert len(untrusted.stderr.strip().splitlines()) == 1
        trusted = ctl(tls_server, "workloads", "list", "--ca-cert", str(ca_file))
        assert trusted.returncode == 0, trusted.stderr
        assert trusted.stdout.split()[:2] == ["ID", "NAME"]
        missing = ctl(tls_server, "workloads", "list", "--ca-cert", str(tmp_path / "nope.pem"))
        assert missing.returncode == 2 and "--ca-cert" in missing.stderr


def test_audit_export_continues_with_the_cursor_it_prints(server):
    for i in range(3):
        ctl(server, "workloads", "create", f"exp{i}", "--namespace", "exp", "--service-account", f"exp{i}")
    first = ctl(server, "audit", "export", "--type", "workload.created", "--limit", "2")
    assert first.returncode == 0, first.stderr
    [hint] = first.stderr.strip().splitlines()
    cursor = hint.rsplit("--cursor ", 1)[1]
    seen = [e["id"] for e in json.loads(first.stdout)]
    for _ in range(20):
        page = ctl(
            server, "audit", "export", "--type", "workload.created", "--limit", "2", "--cursor", cursor
        )
        assert page.returncode == 0, page.stderr
        seen += [e["id"] for e in json.loads(page.stdout)]
        if not page.stderr.strip():
            break
        cursor = page.stderr.strip().rsplit("--cursor ", 1)[1]
    everything = json.loads(ctl(server, "audit", "export", "--type", "workload.created").stdout)
    assert seen == [e["id"] for e in everything] and len(seen) >= 3


def test_api_keys_have_no_get_verb_because_the_api_has_no_such_route():
    from controlplane.cli._parser import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["api-keys", "get", "key_x"])
    assert exit_info.value.code == 2
    assert parser.parse_args(["workloads", "get", "wl_x"]).verb == "get"


def test_tls_server_name_verifies_a_port_forwarded_control_plane(tmp_path):
    """The certificate names the in-cluster Service; the client dials 127.0.0.1 (a port-forward)."""
    ca = DevCA("sesamectl test CA")
    service = "sesame-controlplane.sesame-system.svc"
    cert = ca.issue([service], tmp_path / "tls")
    ca_file = ca.write_ca(tmp_path / "ca.pem")
    args = ("--tls-cert", str(cert.cert_file), "--tls-key", str(cert.key_file))
    with control_plane_process(tmp_path / "cp.db", args=args) as tls_server:
        mismatch = ctl(tls_server, "workloads", "list", "--ca-cert", str(ca_file))
        assert mismatch.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in mismatch.stderr
        by_flag = ctl(
            tls_server, "workloads", "list", "--ca-cert", str(ca_file), "--tls-server-name", service
        )
        assert by_flag.returncode == 0, by_flag.stderr
        wrong = ctl(
            tls_server, "workloads", "list", "--ca-cert", str(ca_file), "--tls-server-name", "evil.example"
        )
        assert wrong.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in wrong.stderr
        env = {
            "SESAME_URL": tls_server.url,
            "SESAME_API_KEY": tls_server.owner_key,
            "SESAME_CA_CERT": str(ca_file),
            "SESAME_TLS_SERVER_NAME": service,
            "PATH": "/usr/bin:/bin",
        }
        by_env = subprocess.run(
            [sys.executable, "-m", "controlplane.cli", "-o", "yaml", "workloads", "list"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert by_env.returncode == 0, by_env.stderr
        assert by_env.stdout.strip() == "[]"


def test_version_and_completion_scripts():
    from importlib.metadata import version

    out = subprocess.run(
        [sys.executable, "-m", "controlplane.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == f"sesamectl {version('sesame')}"
    for shell, marker in (
        ("bash", "complete "),
        ("zsh", "compdef"),
        ("fish", "complete --command sesamectl"),
    ):
        script = subprocess.run(
            [sys.executable, "-m", "controlplane.cli", "completion", shell],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert script.returncode == 0 and marker in script.stdout, (shell, script.stdout[:500])


def test_completion_answers_with_the_commands(tmp_path):
    """What the shell scripts ask: argcomplete's protocol (COMP_LINE in, candidates on fd 8)."""
    out_file = tmp_path / "candidates"
    line = "sesamectl workloads "
    subprocess.run(
        ["/bin/bash", "-c", f'"{sys.executable}" -m controlplane.cli 8>"{out_file}"'],
        env={
            "_ARGCOMPLETE": "1",
            "_ARGCOMPLETE_IFS": "\n",
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        timeout=60,
    )
    candidates = set(out_file.read_text().split("\n"))
    assert {"list", "get", "create", "update", "delete"} <= candidates
    assert "rotate" not in candidates  # only credential providers rotate


def _actions(parser, path=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, (*path, name))
        else:
            yield path, action


def test_every_flag_and_argument_has_a_description():
    import argparse

    from controlplane.cli._parser import build_parser

    missing = [
        (" ".join(path), action.option_strings or action.dest)
        for path, action in _actions(build_parser())
        if not action.help
        or (action.help == argparse.SUPPRESS and not isinstance(action, argparse._HelpAction))
    ]
    assert missing == []
