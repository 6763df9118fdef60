"""Route modules of the control plane. To add yours, append ONE line to `MODULES`.

A route module exposes `ROUTES: list[controlplane.routes.Route]` and may define
`setup(app: web.Application) -> None` (called by `create_app` before start-up) to add app keys,
ready checks or a `cleanup_ctx` of its own.
"""

from __future__ import annotations

from types import ModuleType

from controlplane.api import (
    admission,
    api_keys,
    approvals,
    audit,
    catalog,
    clusters,
    credential_providers,
    policies,
    probes,
    proxy_facing,
    targets,
    token_exchange,
    workloads,
)

__all__ = ["MODULES"]

MODULES: list[ModuleType] = [
    probes,
    catalog,
    api_keys,
    workloads,
    clusters,
    targets,
    credential_providers,
    policies,
    audit,
    admission,
    token_exchange,  # CP-exchange: token exchange, JWKS, key rotation (sets up the exchange services)
    approvals,
    proxy_facing,
]
