"""/v1/clusters: trusted Kubernetes clusters (token issuers)."""

from __future__ import annotations

from controlplane.api._crud import Resource, crud_routes
from controlplane.permissions import CLUSTERS_READ, CLUSTERS_WRITE
from controlplane.validation import Obj, Str

__all__ = ["CLUSTER_IN", "ROUTES"]

URL = r"https?://[^\s/?#]+[^\s]*"
DEFAULT_AUDIENCE = "sesame"

CLUSTER_IN = Obj(
    {
        "name": Str(max_len=100, pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*"),
        "issuer": Str(max_len=2048, description="the `iss` of the cluster's service account tokens"),
        "jwks_uri": Str(required=False, max_len=2048, pattern=URL, description="default: OIDC discovery"),
        "audience": Str(max_len=256, default=DEFAULT_AUDIENCE, description="required `aud` of SA tokens"),
        "verification": Str(choices=("jwks", "tokenreview"), default="jwks"),
        "api_server": Str(required=False, max_len=2048, pattern=URL, description="for TokenReview"),
        "ca_pem": Str(required=False, max_len=65536, description="CA bundle for jwks_uri / api_server"),
    }
)

ROUTES = crud_routes(
    Resource(
        kind="clusters",
        path="/v1/clusters",
        singular="cluster",
        create=CLUSTER_IN,
        patch=CLUSTER_IN.partial(),
        read=CLUSTERS_READ,
        write=CLUSTERS_WRITE,
        filters={"name": Str(required=False, max_len=100), "issuer": Str(required=False, max_len=2048)},
    )
)
