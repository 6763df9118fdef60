"""What each sesamectl command requests from the REST API, and how its result is shown."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

import yaml

from controlplane.cli import declarative
from controlplane.cli._http import Api, CliError
from controlplane.cli.documents import load_documents

__all__ = ["APPROVAL_COLUMNS", "AUDIT_COLUMNS", "RESOURCES", "VIEWS", "Outcome", "run"]

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
        ("id", "name", "workload", "target", "provider", "effect", "max_ttl_seconds"),
    ),
    "api-keys": ("/v1/api-keys", ("id", "name", "role", "prefix", "created_at", "last_used_at")),
}
# Read-only collections (filled by the proxies): list only.
VIEWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "proxies": ("/v1/proxies", ("workload", "pod", "version", "first_seen", "last_seen")),
    "discovery": ("/v1/discovery", ("workload", "host", "port", "governed", "count", "last_seen")),
}
APPROVAL_COLUMNS = ("id", "status", "workload", "target", "created_at", "decided_by", "expires_at")
# Reference columns shown by name in tables: field -> (column, collection path).
_NAMED_REFERENCES = {
    "workload_id": ("workload", "/v1/workloads"),
    "target_id": ("target", "/v1/targets"),
    "provider_id": ("provider", "/v1/credential-providers"),
}


@dataclass
class Outcome:
    result: Any
    columns: tuple[str, ...] | None = None  # None: a key/value block
    status: int = 0  # the exit status


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


def run(args: argparse.Namespace, api: Api) -> Outcome:
    """Do the requests of one command; returns what to print and the exit status."""
    if args.resource in ("apply", "diff", "export"):
        return _declarative(args, api)
    return Outcome(*_run(args, api))


def _declarative(args: argparse.Namespace, api: Api) -> Outcome:
    docs = [] if args.resource == "export" else load_documents(args.filename)  # usage errors first
    state = declarative.State.read(api)
    if args.resource == "export":
        exported = [d for d in declarative.export(state) if not args.kind or d["kind"] in args.kind]
        if args.output == "json":
            return Outcome(exported)
        sys.stdout.write(yaml.safe_dump_all(exported, sort_keys=False))
        return Outcome(None)
    selector = dict(_pairs(args.selector, "--selector"))
    changes = declarative.plan(docs, state, prune=args.prune, selector=selector)
    if args.resource == "diff":
        lines = declarative.render_plan(changes)
        print("\n".join(lines), end="\n" if lines else "")
        return Outcome(None, status=1 if lines else 0)
    print("\n".join(declarative.apply(api, changes)))
    return Outcome(None)


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{flag} needs KEY=VALUE, got {item!r}", 2)
        out.append((key, value))
    return out


def _with_names(api: Api, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with a name column beside each reference to a workload, target or provider."""
    for field, (column, path) in _NAMED_REFERENCES.items():
        if not any(row.get(field) for row in rows):
            continue
        names = {r["id"]: r["name"] for r in api.pages(path, {"limit": 100}, key="data", follow=True)}
        for row in rows:
            row[column] = names.get(row.get(field), row.get(field))
    return rows


def _api_key_id(api: Api, id_or_name: str) -> str:
    """API key names need not be unique: a name is taken when exactly one key has it."""
    keys = api.pages("/v1/api-keys", {"limit": 100}, key="data", follow=True)
    if any(k["id"] == id_or_name for k in keys):
        return id_or_name
    named = [k["id"] for k in keys if k["name"] == id_or_name]
    if len(named) > 1:
        raise CliError(f"{len(named)} API keys are named {id_or_name}: give the id ({', '.join(named)})")
    return named[0] if named else id_or_name


def _run(args: argparse.Namespace, api: Api) -> tuple[Any, tuple[str, ...] | None]:
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
        return _with_names(api, _list(args, api, path)), columns
    if verb == "get":
        return api.request("GET", f"{path}/{args.id}"), None
    if verb == "delete":
        target = _api_key_id(api, args.id) if args.resource == "api-keys" else args.id
        api.request("DELETE", f"{path}/{target}")
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
    filters = dict(_pairs(args.filter, "--filter"))
    return api.pages(path, {"limit": args.limit, **filters}, key="data", follow=args.all)


def _approvals(args: argparse.Namespace, api: Api) -> tuple[Any, tuple[str, ...] | None]:
    if args.verb == "list":
        return _with_names(api, _list(args, api, "/v1/approvals")), APPROVAL_COLUMNS
    body = {
        k: v for k, v in (("window_seconds", args.window_seconds), ("comment", args.comment)) if v is not None
    }
    return api.request("POST", f"/v1/approvals/{args.id}/{args.verb}", body=body), None


def _workload_id(api: Api, id_or_name: str) -> str:
    """The id of a workload named by id or name; a deleted workload's id is kept as given."""
    try:
        return api.request("GET", f"/v1/workloads/{id_or_name}")["id"]
    except CliError:
        return id_or_name


def _audit(args: argparse.Namespace, api: Api) -> tuple[Any, tuple[str, ...] | None]:
    if args.action == "verify":
        return api.request("GET", "/v1/audit/verify"), None
    if args.action == "prune":
        if args.days is None:
            raise CliError("audit prune needs --days N", 2)
        return api.request("POST", "/v1/audit/prune", body={"days": args.days}), None
    query = {
        "workload_id": args.workload_id and _workload_id(api, args.workload_id),
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
