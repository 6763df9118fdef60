"""/v1/clusters: trusted Kubernetes clusters (token issuers)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controlplane.api._crud import Resource, crud_routes
from controlplane.api._destinations import refuse_private_literal
from controlplane.api_schemas import record_schema
from controlplane.appkeys import CONFIG
from controlplane.permissions import CLUSTERS_READ, CLUSTERS_WRITE
from controlplane.validation import HTTPS_URL_HINT, HTTPS_URL_PATTERN, Bool, Obj, Str

__all__ = ["CLUSTER_IN", "ROUTES"]


CLUSTER_IN = Obj(
    {
        "name": Str(max_len=100, pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*"),
        "issuer": Str(
            max_len=2048,
            pattern=HTTPS_URL_PATTERN,
            pattern_hint=HTTPS_URL_HINT,
            description="the `iss` of the cluster's service account tokens: " + HTTPS_URL_HINT,
        ),
        "jwks_uri": Str(
            required=False,
            max_len=2048,
            pattern=HTTPS_URL_PATTERN,
            pattern_hint=HTTPS_URL_HINT,
            description="default: OIDC discovery; " + HTTPS_URL_HINT,
        ),
        "audience": Str(
            required=False, max_len=256, description="required `aud` of SA tokens (default SESAME_AUDIENCE)"
        ),
        "verification": Str(choices=("jwks", "tokenreview"), default="jwks"),
        "ca_pem": Str(required=False, max_len=65536, description="CA bundle for jwks_uri and OIDC discovery"),
        "pod_binding": Bool(
            default=False,
            description="also GET the token's pod: it must exist, match the token's pod uid and service "
            "account, and not be terminating (needs `get pods`; docs/token-exchange.md)",
        ),
    }
)


async def _prepare(
    request: web.Request, body: dict[str, Any], current: dict[str, Any] | None, id: str
) -> tuple[dict[str, Any], bytes | None]:
    """Refuse a fetch URL on a literal private address; a new cluster without an audience gets the
    configured one (`sesame` unless SESAME_AUDIENCE)."""
    merged = {**(current or {}), **body}
    if merged.get("jwks_uri"):
        await refuse_private_literal(request, merged["jwks_uri"], "jwks_uri")
    elif merged.get("verification", "jwks") == "jwks":  # discovery is fetched from the issuer
        await refuse_private_literal(request, merged["issuer"], "issuer")
    if current is None and not body.get("audience"):
        body = {**body, "audience": request.app[CONFIG].exchange.audience}
    return body, None


ROUTES = crud_routes(
    Resource(
        kind="clusters",
        path="/v1/clusters",
        singular="cluster",
        create=CLUSTER_IN,
        patch=CLUSTER_IN.partial(),
        read=CLUSTERS_READ,
        write=CLUSTERS_WRITE,
        prepare=_prepare,
        component="Cluster",
        plural="Clusters",
        schema=record_schema(CLUSTER_IN, always=("audience",)),
        filters={"name": Str(required=False, max_len=100), "issuer": Str(required=False, max_len=2048)},
    )
)
