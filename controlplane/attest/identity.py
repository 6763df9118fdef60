"""What attestation proves: a workload identity, and the trust settings of one cluster."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from controlplane.clock import Clock
from controlplane.errors import SesameError

__all__ = [
    "DEFAULT_CLUSTER_AUDIENCE",
    "DEFAULT_MAX_TOKEN_BYTES",
    "DEFAULT_SKEW_SECONDS",
    "Clock",
    "ClusterTrust",
    "Identity",
    "InvalidSubjectToken",
    "Verifier",
    "token_digest",
]

DEFAULT_CLUSTER_AUDIENCE = "sesame"
DEFAULT_SKEW_SECONDS = 30
DEFAULT_MAX_TOKEN_BYTES = 16 * 1024


class InvalidSubjectToken(SesameError):
    """The subject token does not prove a workload identity; `reason` names why."""

    code, status = "invalid_subject_token", 401

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class ClusterTrust:
    """A trusted cluster as registered under /v1/clusters."""

    name: str
    issuer: str
    audience: str = DEFAULT_CLUSTER_AUDIENCE
    jwks_uri: str | None = None
    verification: Literal["jwks", "tokenreview"] = "jwks"
    ca_pem: str | None = None
    pod_binding: bool = False
    id: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ClusterTrust:
        """From a /v1/clusters record."""
        return cls(
            name=record["name"],
            issuer=record["issuer"],
            audience=record.get("audience") or DEFAULT_CLUSTER_AUDIENCE,
            jwks_uri=record.get("jwks_uri"),
            verification=record.get("verification") or "jwks",
            ca_pem=record.get("ca_pem"),
            pod_binding=record.get("pod_binding") is True,
            id=record.get("id"),
        )


@dataclass(frozen=True, kw_only=True)
class Identity:
    """A verified workload: (cluster, namespace, service account) plus the pod, kept for audit."""

    cluster: str
    namespace: str
    service_account: str
    pod_name: str | None = None
    pod_uid: str | None = None
    expires_at: float = 0.0
    cluster_id: str | None = None

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def audit_fields(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "namespace": self.namespace,
            "service_account": self.service_account,
            "pod_name": self.pod_name,
            "pod_uid": self.pod_uid,
        }


class Verifier(Protocol):
    """Turns a projected service-account token of a known cluster into an Identity."""

    async def verify(self, token: str, cluster: ClusterTrust) -> Identity: ...


def token_digest(token: str) -> str:
    """A stable key for caches; never log the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()
