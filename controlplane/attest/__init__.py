"""Workload attestation: prove who a pod is from its projected service-account token."""

from __future__ import annotations

from controlplane.attest.attestor import Attestor, ClusterDirectory
from controlplane.attest.identity import (
    DEFAULT_CLUSTER_AUDIENCE,
    ClusterTrust,
    Identity,
    InvalidSubjectToken,
    Verifier,
    token_digest,
)
from controlplane.attest.jwks import JwksSettings, JwksVerifier
from controlplane.attest.kube import KubeApi
from controlplane.attest.pod_binding import KubePodLookup, PodBinder, PodBindingSettings, PodLookup
from controlplane.attest.tokenreview import TokenReviewSettings, TokenReviewVerifier

__all__ = [
    "DEFAULT_CLUSTER_AUDIENCE",
    "Attestor",
    "ClusterDirectory",
    "ClusterTrust",
    "Identity",
    "InvalidSubjectToken",
    "JwksSettings",
    "JwksVerifier",
    "KubeApi",
    "KubePodLookup",
    "PodBinder",
    "PodBindingSettings",
    "PodLookup",
    "TokenReviewSettings",
    "TokenReviewVerifier",
    "Verifier",
    "token_digest",
]
