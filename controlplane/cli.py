"""`sesamectl`: the admin CLI over the REST API (SESAME_URL, SESAME_API_KEY).

    sesamectl workloads list [--all] [--limit N] [--filter namespace=prod]
    sesamectl workloads create NAME --namespace NS --service-account SA [--cluster C]
    sesamectl targets create NAME --set host=api.example.com --set injection.type=bearer
    sesamectl credential-providers create NAME --set type=static --data-file secret.json
    sesamectl credential-providers rotate ID --data-file new-secret.json
    sesamectl policies delete ID
    sesamectl audit [--workload-id ID] [--type T] [--since TS] ...  |  audit verify | export | prune --days N
    sesamectl api-keys create NAME --role admin
    sesamectl approvals list [--filter status=pending]  |  approvals approve ID [--window-seconds N]
    sesamectl approvals deny ID [--comment TEXT]
    sesamectl proxies list  |  discovery list [--filter governed=false]  |  keys rotate

HTTPS with a private CA: `--ca-cert FILE` (env SESAME_CA_CERT).
Tables by default, `--json` for raw JSON. API errors print one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["main"]

MAX_PAGES = 10_000
TIMEOUT_SECONDS = 30

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


class CliError(Exception):
    """One line for the user; exit status 1 (API / network) or 2 (usage)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Api:
    def __init__(self, url: str, key: str, *, ca_cert: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self._ssl = _ssl_context(ca_cert) if ca_cert else None
        self.last_headers: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        raw: bool = False,
    ) -> Any:
        q = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.url + path + (f"?{urllib.parse.urlencode(q)}" if q else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.key}",
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if data is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS, context=self._ssl) as resp:
                payload = resp.read()
                self.last_headers = dict(resp.headers.items())
        except urllib.error.HTTPError as exc:
            raise CliError(_api_error(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach {self.url}: {reason}") from None
        if raw:
            return payload
        return json.loads(payload) if payload else None

    def pages(self, path: str, query: dict[str, Any], *, key: str, follow: bool) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = None
        for _ in range(MAX_PAGES):
            body = self.request("GET", path, query={**query, "cursor": cursor})
            rows.extend(body[key])
            cursor = body.get("next_cursor")
            if not follow or not cursor:
                break
        return rows


def _ssl_context(ca_cert: str) -> ssl.SSLContext:
    """System roots plus the PEM file `ca_cert` (the chart's CA is in no system store)."""
    try:
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(cafile=ca_cert)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"bad --ca-cert {ca_cert}: {exc}", 2) from None
    return ctx


def _api_error(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    code = body.get("error", f"http_{exc.code}")
    message = body.get("message", exc.reason)
    field = f" (field: {body['field']})" if body.get("field") else ""
    retry = f" (retry after {exc.headers.get('Retry-After')}s)" if exc.code == 429 else ""
    return f"{exc.code} {code}: {message}{field}{retry}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sesamectl", description="Sesame admin CLI")
    _common_args(parser, None)
    # Sub-commands accept the same options anywhere; SUPPRESS keeps them from resetting the top level.
    common = argparse.ArgumentParser(add_help=False)
    _common_args(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="resource", required=True)
    for name in RESOURCES:
        res = sub.add_parser(name, parents=[common], help=f"manage {name}")
        verbs = res.add_subparsers(dest="verb", required=True)
        lst = verbs.add_parser("list", parents=[common])
        lst.add_argument("--limit", type=int, default=100)
        lst.add_argument("--all", action="store_true", help="follow next_cursor to the end")
        lst.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE")
        for verb in ("get", "delete"):
            verbs.add_parser(verb, parents=[common]).add_argument("id")
        create = verbs.add_parser("create", parents=[common])
        create.add_argument("name", nargs="?" if name == "policies" else None)
        _body_args(create)
        if name == "workloads":
            create.add_argument("--namespace")
            create.add_argument("--service-account")
            create.add_argument("--cluster")
        if name == "api-keys":
            create.add_argument("--role", choices=("viewer", "admin", "owner"), default="viewer")
        if name != "api-keys":
            patch = verbs.add_parser("update", parents=[common])
            patch.add_argument("id")
            _body_args(patch)
        if name == "credential-providers":
            rotate = verbs.add_parser("rotate", parents=[common], help="replace the secret config fields")
            rotate.add_argument("id")
            _body_args(rotate)
    for name in VIEWS:
        view = sub.add_parser(name, parents=[common], help=f"show {name} (reported by the proxies)")
        lst = view.add_subparsers(dest="verb", required=True).add_parser("list", parents=[common])
        lst.add_argument("--limit", type=int, default=100)
        lst.add_argument("--all", action="store_true", help="follow next_cursor to the end")
        lst.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE")
    approvals = sub.add_parser("approvals", parents=[common], help="list, approve or deny approvals")
    verbs = approvals.add_subparsers(dest="verb", required=True)
    lst = verbs.add_parser("list", parents=[common])
    lst.add_argument("--limit", type=int, default=100)
    lst.add_argument("--all", action="store_true", help="follow next_cursor to the end")
    lst.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="e.g. status=pending")
    for verb in ("approve", "deny"):
        decide = verbs.add_parser(verb, parents=[common])
        decide.add_argument("id")
        decide.add_argument("--window-seconds", type=int, help="how long the decision holds")
        decide.add_argument("--comment")
    keys = sub.add_parser("keys", parents=[common], help="signing keys of the control plane's JWTs")
    keys.add_subparsers(dest="verb", required=True).add_parser(
        "rotate", parents=[common], help="make a new current signing key (owner)"
    )
    audit = sub.add_parser("audit", parents=[common], help="read, export, verify, prune the audit log")
    audit.add_argument("action", nargs="?", choices=("list", "export", "verify", "prune"), default="list")
    for flag in ("workload-id", "target", "type", "actor", "correlation-id", "since", "until"):
        audit.add_argument(f"--{flag}")
    audit.add_argument("--limit", type=int)
    audit.add_argument("--all", action="store_true")
    audit.add_argument("--format", choices=("json", "csv"), default="json", help="export format")
    audit.add_argument("--cursor", help="export: continue where the previous export stopped")
    audit.add_argument("--days", type=int, help="prune: delete events older than this")
    sub.add_parser("permissions", parents=[common], help="show the permission catalog")
    return parser


def _common_args(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument("--url", default=default, help="control plane URL (env SESAME_URL)")
    p.add_argument("--api-key", default=default, help="admin API key (env SESAME_API_KEY)")
    p.add_argument("--ca-cert", default=default, help="PEM file of a CA to trust (env SESAME_CA_CERT)")
    p.add_argument(
        "--json", action="store_true", default=False if default is None else default, help="print raw JSON"
    )


def _body_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a field; dotted keys nest (config.client_id=x); JSON values are parsed",
    )
    p.add_argument("--data", help="JSON body (merged under --set)")
    p.add_argument("--data-file", help="file with a JSON body, or - for stdin (keeps secrets out of argv)")


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


def _run(args: argparse.Namespace, api: Api) -> tuple[Any, tuple[str, ...] | None]:
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


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | dict):
        return ",".join(map(str, value)) if isinstance(value, list) else json.dumps(value)
    return str(value)


def render_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[c.upper() for c in columns]] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _print(result: Any, columns: tuple[str, ...] | None, as_json: bool) -> None:
    if result is None:
        return
    if as_json:
        print(json.dumps(result, indent=2))
    elif columns is not None:
        print(render_table(result, columns))
    else:
        width = max((len(k) for k in result), default=0)
        for key, value in result.items():
            print(f"{key.ljust(width)}  {_cell(value)}")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = _parser().parse_args(argv)
    url = args.url or env.get("SESAME_URL")
    key = args.api_key or env.get("SESAME_API_KEY")
    ca_cert = args.ca_cert or env.get("SESAME_CA_CERT")
    try:
        if not url or not key:
            raise CliError("set SESAME_URL and SESAME_API_KEY (or pass --url/--api-key)", 2)
        result, columns = _run(args, Api(url, key, ca_cert=ca_cert))
        _print(result, columns, args.json)
    except CliError as exc:
        print(f"sesamectl: error: {exc}", file=sys.stderr)
        return exc.status
    return 0


if __name__ == "__main__":
    sys.exit(main())
