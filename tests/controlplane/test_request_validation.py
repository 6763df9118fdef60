"""Bad input is answered with 400 invalid_request naming the field, or 413 for big bodies."""

from __future__ import annotations

import httpx
import pytest

from devkit.controlplane_server import running_control_plane
from tests.controlplane.conftest import workload_body


async def test_malformed_json_is_invalid_request(admin):
    resp = await admin.post(
        "/v1/workloads", content=b'{"name": "x",', headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"
    assert "message" in resp.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([1, 2], None),
        ({"name": 5, "attestation": workload_body()["attestation"]}, "name"),
        ({"name": "x"}, "attestation"),
        ({"name": "x", "attestation": "kube"}, "attestation"),
        ({**workload_body(), "color": "red"}, "color"),
        ({"name": "x", "attestation": {**workload_body()["attestation"], "extra": 1}}, "attestation.extra"),
        ({"name": "x", "attestation": {**workload_body()["attestation"], "type": "aws"}}, "attestation.type"),
        (
            {"name": "x", "attestation": {**workload_body()["attestation"], "namespace": "Bad_NS"}},
            "attestation.namespace",
        ),
        ({"name": None, "attestation": workload_body()["attestation"]}, "name"),
        ({"name": "", "attestation": workload_body()["attestation"]}, "name"),
        ({"name": "x" * 201, "attestation": workload_body()["attestation"]}, "name"),
    ],
)
async def test_wrong_types_unknown_and_missing_fields_name_the_field(admin, body, field):
    resp = await admin.post("/v1/workloads", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_request"
    assert resp.json().get("field") == field


async def test_wrong_integer_types_are_rejected(admin):
    base = {"name": "api", "host": "api.example.com"}
    for port in ("443", 4.5, True, 0, 70000):
        resp = await admin.post("/v1/targets", json={**base, "port": port})
        assert resp.status_code == 400 and resp.json()["field"] == "port", port


async def test_oversized_body_is_413(tmp_path):
    async with running_control_plane(tmp_path / "cp.db", max_body_bytes=4096) as cp:
        async with httpx.AsyncClient(
            base_url=cp.url, headers={"Authorization": f"Bearer {cp.owner_key}"}
        ) as c:
            big = {**workload_body(), "name": "x" * 10_000}
            resp = await c.post("/v1/workloads", json=big)
            assert resp.status_code == 413
            assert resp.json()["error"] == "payload_too_large"

            async def chunks():
                for _ in range(10):
                    yield b"x" * 1000

            streamed = await c.post(
                "/v1/workloads", content=chunks(), headers={"Content-Type": "application/json"}
            )
            assert streamed.status_code == 413
            assert streamed.json()["error"] == "payload_too_large"
            assert (await c.get("/healthz")).status_code == 200


async def test_unknown_route_and_method_are_json_errors(admin):
    resp = await admin.get("/v1/nothing")
    assert resp.status_code == 404 and resp.json()["error"] == "not_found"
    resp = await admin.put("/v1/workloads")
    assert resp.status_code == 405 and resp.json()["error"] == "method_not_allowed"
