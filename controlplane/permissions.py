"""Roles (viewer < admin < owner) and the permissions routes declare.

A `Permission` names the least role that holds it. The catalog served at GET /v1/permissions is
collected from the registered routes, so a module that defines a new permission for its route
needs no other registration.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Permission", "Role"]


class Role(enum.IntEnum):
    VIEWER = 1
    ADMIN = 2
    OWNER = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        return cls[text.upper()]


ROLE_NAMES = tuple(r.label for r in Role)


@dataclass(frozen=True)
class Permission:
    name: str
    role: Role
    description: str

    def allows(self, role: Role) -> bool:
        return role >= self.role


WORKLOADS_READ = Permission("workloads.read", Role.VIEWER, "List and read workload registrations")
WORKLOADS_WRITE = Permission("workloads.write", Role.ADMIN, "Create, update, revoke and delete workloads")
CLUSTERS_READ = Permission("clusters.read", Role.VIEWER, "List and read trusted clusters")
CLUSTERS_WRITE = Permission("clusters.write", Role.ADMIN, "Create, update and delete trusted clusters")
TARGETS_READ = Permission("targets.read", Role.VIEWER, "List and read targets")
TARGETS_WRITE = Permission("targets.write", Role.ADMIN, "Create, update and delete targets")
PROVIDERS_READ = Permission(
    "credential_providers.read", Role.VIEWER, "List and read credential providers (metadata only)"
)
PROVIDERS_WRITE = Permission(
    "credential_providers.write", Role.ADMIN, "Create, update, rotate and delete credential providers"
)
POLICIES_READ = Permission("policies.read", Role.VIEWER, "List and read policies")
POLICIES_WRITE = Permission("policies.write", Role.ADMIN, "Create, update and delete policies")
AUDIT_READ = Permission("audit.read", Role.VIEWER, "Read, export and verify the audit log")
AUDIT_PRUNE = Permission("audit.prune", Role.OWNER, "Delete old audit events")
API_KEYS_READ = Permission("api_keys.read", Role.OWNER, "List admin API keys")
API_KEYS_WRITE = Permission("api_keys.write", Role.OWNER, "Create and revoke admin API keys")
PERMISSIONS_READ = Permission("permissions.read", Role.VIEWER, "Read the permission catalog")
