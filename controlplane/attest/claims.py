"""Checks shared by every verifier: the JOSE header, registered claims, and `kubernetes.io`."""

from __future__ import annotations

import functools
import math
from typing import Any

import jwt

from controlplane.attest.identity import (
    DEFAULT_MAX_TOKEN_BYTES,
    ClusterTrust,
    Identity,
    InvalidSubjectToken,
)

__all__ = ["ASYMMETRIC_ALGS", "check_claims", "identity_from_claims", "read_unverified"]

# Kubernetes signs with RS256 or ES256 (ES384/ES512/PS* are possible with custom key files).
ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})


def read_unverified(
    token: str, *, max_bytes: int = DEFAULT_MAX_TOKEN_BYTES
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims before verification, used only to route the token to its cluster.

    Parsed once per token (the attestor and the verifier both ask): pyjwt checks every character
    of every segment in Python, which was most of the cost of verifying a new token. Callers must
    not change the returned dicts.
    """
    if len(token.encode()) > max_bytes:
        raise InvalidSubjectToken("token_too_large", f"the subject token is larger than {max_bytes} bytes")
    header, claims = _parse(token)
    alg = header.get("alg")
    if alg not in ASYMMETRIC_ALGS:
        raise InvalidSubjectToken("alg_not_allowed", f"the signing algorithm {alg!r} is not accepted")
    return header, claims


@functools.lru_cache(maxsize=64)  # the same request asks twice; 64 x 64 KiB at most
def _parse(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        complete = jwt.decode_complete(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise InvalidSubjectToken("malformed", "the subject token is not a JWT") from exc
    return complete["header"], complete["payload"]


def check_claims(claims: dict[str, Any], cluster: ClusterTrust, *, now: float, skew: float) -> Identity:
    """Issuer, audience, validity window (with skew) and `kubernetes.io` claims → the Identity."""
    if claims.get("iss") != cluster.issuer:
        raise InvalidSubjectToken("wrong_issuer", "the token's issuer is not the cluster's issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if cluster.audience not in audiences:
        raise InvalidSubjectToken(
            "audience_mismatch", f"the token's audience does not include {cluster.audience!r}"
        )
    exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise InvalidSubjectToken("missing_claims", "the token has no expiry")
    if now >= exp + skew:
        raise InvalidSubjectToken("expired", "the token has expired")
    for name, value in (("nbf", nbf), ("iat", iat)):
        if value is not None and (not isinstance(value, int | float) or value > now + skew):
            raise InvalidSubjectToken("not_yet_valid", f"the token is not valid yet ({name})")
    return identity_from_claims(claims, cluster)


def identity_from_claims(claims: dict[str, Any], cluster: ClusterTrust) -> Identity:
    """The identity in a projected token's `kubernetes.io` claim, cross-checked against `sub`."""
    k8s = claims.get("kubernetes.io")
    try:
        namespace = k8s["namespace"]
        service_account = k8s["serviceaccount"]["name"]
        pod = k8s.get("pod") or {}
    except (TypeError, KeyError, AttributeError) as exc:
        raise InvalidSubjectToken(
            "missing_claims", "the token has no kubernetes.io service-account claims"
        ) from exc
    if not (
        isinstance(namespace, str) and namespace and isinstance(service_account, str) and service_account
    ):
        raise InvalidSubjectToken("missing_claims", "the token has no kubernetes.io service-account claims")
    if claims.get("sub") != f"system:serviceaccount:{namespace}:{service_account}":
        raise InvalidSubjectToken(
            "missing_claims", "the token's subject does not match its kubernetes.io claims"
        )
    return Identity(
        cluster=cluster.name,
        cluster_id=cluster.id,
        namespace=namespace,
        service_account=service_account,
        pod_name=_text(pod, "name"),
        pod_uid=_text(pod, "uid"),
        expires_at=float(claims["exp"]),
    )


def _text(obj: Any, key: str) -> str | None:
    """A string claim inside `obj`, or None (a claim of another type is ignored, never stored)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None
