"""The control plane logs JSON: every line of a real `sesame-controlplane serve` process is one JSON
object; each request's access line carries its request id and the ids of the audit events it wrote."""

from __future__ import annotations

import json

import httpx
import pytest

from devkit.controlplane_server import LOOPBACK_ENV, control_plane_process


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with control_plane_process(tmp_path_factory.mktemp("logs") / "cp.db", env=LOOPBACK_ENV) as cp:
        yield cp


def log_lines(server) -> list[dict]:
    lines = [line for line in server.log_text().splitlines() if line.strip()]
    assert lines
    return [json.loads(line) for line in lines]  # every line is JSON (raises otherwise)


def test_every_line_is_json_and_access_lines_name_request_and_audit_event(server):
    headers = {"Authorization": f"Bearer {server.owner_key}", "X-Request-Id": "req-logs-1"}
    made = httpx.post(
        f"{server.url}/v1/credential-providers",
        json={"name": "logged", "type": "static", "config": {"value": "sk-never-logged-123"}},
        headers=headers,
        timeout=10,
    )
    assert made.status_code == 201, made.text
    missing = httpx.get(f"{server.url}/v1/workloads/nope", headers={**headers, "X-Request-Id": "req-logs-2"})
    assert missing.status_code == 404
    events = httpx.get(
        f"{server.url}/v1/audit",
        params={"correlation_id": "req-logs-1"},
        headers={**headers, "X-Request-Id": "req-logs-audit"},
        timeout=10,
    ).json()["events"]
    [created] = [e for e in events if e["type"] == "credential_provider.created"]

    lines = log_lines(server)
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    [access] = [
        line
        for line in lines
        if line["logger"] == "controlplane.access" and line.get("request_id") == "req-logs-1"
    ]
    assert (access["method"], access["path"], access["status"]) == ("POST", "/v1/credential-providers", 201)
    assert access["audit_event_ids"] == [created["id"]]
    [not_found] = [
        line
        for line in lines
        if line.get("request_id") == "req-logs-2" and line["logger"] == "controlplane.access"
    ]
    assert not_found["status"] == 404 and "audit_event_ids" not in not_found
    assert "sk-never-logged-123" not in server.log_text()
    assert any("issuer URL" in line["msg"] for line in lines)
