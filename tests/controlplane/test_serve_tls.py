"""`serve --tls-cert/--tls-key` serves HTTPS (the admission webhook needs it), verified by a real client."""

from __future__ import annotations

import ssl

import httpx

from devkit.controlplane_server import control_plane_process
from tests.controlplane.exchange_support import write_self_signed


def test_serve_over_https(tmp_path):
    cert, key = write_self_signed(tmp_path)
    with control_plane_process(
        tmp_path / "cp.db", args=("--tls-cert", str(cert), "--tls-key", str(key))
    ) as cp:
        assert cp.url.startswith("https://127.0.0.1:")
        with httpx.Client(base_url=cp.url, verify=ssl.create_default_context(cafile=str(cert))) as client:
            assert client.get("/healthz").status_code == 200
            resp = client.get("/v1/workloads", headers={"Authorization": f"Bearer {cp.owner_key}"})
            assert resp.status_code == 200
