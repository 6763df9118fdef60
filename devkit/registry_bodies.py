"""Request bodies for the control plane's registry API, shared by tests, benches and the demo."""

from __future__ import annotations

from typing import Any

__all__ = ["service_account_workload"]


def service_account_workload(
    name: str, *, namespace: str, service_account: str, cluster: str | None = None
) -> dict[str, Any]:
    """`POST /v1/workloads` for a Kubernetes service account (in `cluster`, when named)."""
    attestation = {
        "type": "kubernetes-service-account",
        "namespace": namespace,
        "service_account": service_account,
    }
    if cluster is not None:
        attestation["cluster"] = cluster
    return {"name": name, "attestation": attestation}
