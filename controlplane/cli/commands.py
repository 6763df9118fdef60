"""What each sesamectl command requests from the REST API, and how its result is shown."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from controlplane.cli._http import Api, CliError

__all__ = ["APPROVAL_COLUMNS", "AUDIT_COLUMNS", "RESOURCES", "VIEWS", "run"]

RESOURCES: dict[str, tuple[str, tuple[str, ...]]] = {
    # name: (collection path, table columns)
    "workloads": ("/v1/workloads", ("id", "name", "namespace", "service_account", "cluster", "status")),
    "clusters": ("/v1/clusters", ("id", "name", "issuer", "audience", "verification")),
    "targets": ("/v1/targets", ("id", "name", "host", "port", "scheme", "tls", "audience")),
    "credential-providers": (
        "/v1/credential-providers",
        ("id", "name", "type", "secret_fields", "secret_rotated_at"),
    ),
    "policies": (
        "/v1/policies",
        ("id", "workload_id", "target_id", "provider_id", "effect", "max_ttl_seconds"),
    ),
    "api-keys": ("/v1/api-keys", ("id", "name", "role", "prefix", "createdAt", "lastUsedAt")),
}
# Read-only collections (filled by the proxies): list only.
VIEWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "proxies": ("/v1/proxies", ("workload_id", "pod", "version", "first_seen", "last_seen")),
    "discovery": ("/v1/discovery", ("workload_id", "host", "port", "governed", "count", "last_seen")),
}
APPROVAL_COLUMNS = ("id", "status", "workload_id", "target_id", "created_at", "decided_by", "expires_at")
AUDIT_COLUMNS = ("timestamp", "type", "outcome", "actor", "workload_id", "target_service", "reason")


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    try:
        if args.data_file:
            text = sys.stdin.read() if args.data_file == "-" else open(args.data_file).read()
            body.update(json.loads(text))
        if args.data:
            body.update(json.loads(args.data))
    except (OSError, ValueError) as exc:
        raise CliError(f"bad --data/--data-file: {exc}", 2) from None
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CliError(f"--set needs KEY=VALUE, got {item!r}", 2)
        node = body
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _value(raw)
    return body


def run(args: argparse.Namespace, api: Api) -> tuple[Any, tuple[str, ...] | None]:
    """Do the request; returns (result, table columns or None for key/value output)."""
    if args.resource == "permissions":
        return api.request("GET", "/v1/permissions")["data"], ("name", "min_role", "description")
    if args.resource == "audit":
        return _audit(args, api)
    if args.resource == "keys":
        return api.request("POST", "/v1/keys/rotate"), None
    if args.resource == "approvals":
        return _approvals(args, api)
    path, columns = RESOURCES.get(args.resource) or VIEWS[args.resource]
    verb = args.verb
    if verb == "list":
        return _list(args, api, path), columns
    if verb == "get":
        return api.request("GET", f"{path}/{args.id}"), None
    if verb == "delete":
        api.request("DELETE", f"{path}/{args.id}")
        return {"deleted": args.id}, None
    body = _body(args)
    if verb == "create":
        if args.name:
            body["name"] = args.name
        if args.resource == "workloads" and (args.namespace or args.service_account):
            att = body.setdefault("attestation", {})
            att.setdefault("type", "kubernetes-service-account")
            att.update(
                {
                    k: v
                    for k, v in (
                        ("namespace", args.namespace),
                        ("service_account", args.service_account),
                        ("cluster", args.cluster),
                    )
                    if v
                }
            )
        if args.resource == "api-keys":
            body.setdefault("role", args.role)
        return api.request("POST", path, body=body), None
    if verb == "update":
        return api.request("PATCH", f"{path}/{args.id}", body=body), None
    if verb == "rotate":
        if "config" not in body:
            body = {"config": body}
        return api.request("POST", f"{path}/{args.id}/rotate", body=body), None
    raise CliError(f"unknown command {verb}", 2)  # pragma: no cover - argparse rejects it


def _list(args: argparse.Namespace, api: Api, path: str) -> list[dict[str, Any]]:
    filters = {}
    for item in args.filter:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--filter needs KEY=VALUE, got {item!r}", 2)
        filters[key] = value
    return api.pages(path, {"limit": args.limit, **filters}, key="data", follow=args.all)


def _approvals(args: argparse.Namespace, api: Api) -> tuple[Any, tuple[str, ...] | None]:
    if args.verb == "list":
        return _list(args, api, "/v1/approvals"), APPROVAL_COLUMNS
    body = {
        k: v for k, v in (("window_seconds", args.window_seconds), ("comment", args.comment)) if v is not None
    }
    return api.request("POST", f"/v1/approvals/{args.id}/{args.verb}", body=body), None


def _audit(args: argparse.Namespace, api: Api) -> tuple[Any, tuple[str, ...] | None]:
    if args.action == "verify":
        return api.request("GET", "/v1/audit/verify"), None
    if args.action == "prune":
        if args.days is None:
            raise CliError("audit prune needs --days N", 2)
        return api.request("POST", "/v1/audit/prune", body={"days": args.days}), None
    query = {
        "workload_id": args.workload_id,
        "target": args.target,
        "type": args.type,
        "actor": args.actor,
        "correlation_id": args.correlation_id,
        "since": args.since,
        "until": args.until,
    }
    if args.action == "export":
        export_query = {**query, "format": args.format, "limit": args.limit, "cursor": args.cursor}
        raw = api.request("GET", "/v1/audit/export", query=export_query, raw=True)
        sys.stdout.write(raw.decode())
        next_cursor = api.last_headers.get("X-Next-Cursor")
        if next_cursor:  # stderr, so stdout stays a clean JSON/CSV document
            print(f"sesamectl: more events remain: continue with --cursor {next_cursor}", file=sys.stderr)
        return None, None
    return api.pages(
        "/v1/audit", {**query, "limit": args.limit or 50}, key="events", follow=args.all
    ), AUDIT_COLUMNS
