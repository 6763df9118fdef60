"""Routes for a registry resource from one declaration: list (paginated), create, get, patch, delete.

`{id}` in a path is a record's id or its name (names are unique per kind; an id wins
over a name that happens to equal it). Every resource carries `labels` (string to string, as in
Kubernetes), which `sesamectl apply --prune` uses to find the objects it manages.

Every mutation is audited as `<singular>.created|updated|deleted`, the audit row committed in the
same transaction as the change. GET, POST and PATCH answer the record's version as a strong
`ETag`; PATCH with `If-Match` applies only to that version (412 `precondition_failed` otherwise).
Without `If-Match`, a PATCH that loses a race with another writer is re-applied to the new
version (its checks re-run), and answers 409 `conflict` only if it keeps losing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from controlplane.api_schemas import component, page_of
from controlplane.appkeys import AUDIT, BODY, QUERY, STORE
from controlplane.errors import Conflict, InvalidRequest, NotFound, PreconditionFailed
from controlplane.http import change_audit, cursor_seq, json_response, now_ts, page_response
from controlplane.ids import new_id
from controlplane.pagination import LIST_QUERY
from controlplane.permissions import Permission
from controlplane.routes import Route
from controlplane.store.base import VersionConflict, Versioned
from controlplane.store.sql.registry import id_prefix
from controlplane.validation import Dict, Obj, Spec

__all__ = ["LABELS", "Resource", "crud_routes", "etag", "fetch", "fetch_versioned", "resolve_id"]

MAX_LABELS = 64
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?" + _LABEL_NAME)
LABEL_VALUE = re.compile(f"({_LABEL_NAME})?")


@dataclass(frozen=True, kw_only=True)
class Labels(Dict):
    """Kubernetes-style labels: at most 64, keys `[prefix/]name`, values of up to 63 characters."""

    def check(self, value: Any, path: str) -> Any:
        value = super().check(value, path)
        if len(value) > MAX_LABELS:
            raise InvalidRequest(f"{path} has more than {MAX_LABELS} labels", field=path)
        for key, val in value.items():
            if len(key) > 316 or not LABEL_KEY.fullmatch(key):
                raise InvalidRequest(f"{path} key {key!r} is not a label key", field=f"{path}.{key}")
            if not isinstance(val, str) or not LABEL_VALUE.fullmatch(val):
                raise InvalidRequest(f"{path}.{key} must be a label value (string)", field=f"{path}.{key}")
        return value

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "maxProperties": MAX_LABELS,
            "propertyNames": {"maxLength": 316, "pattern": f"^(?:{LABEL_KEY.pattern})$"},
            "additionalProperties": {"type": "string", "pattern": f"^(?:{LABEL_VALUE.pattern})$"},
        }


LABELS = Labels(required=False, max_bytes=32768, description="key/value labels, e.g. managed-by")

# A PATCH without If-Match that loses this many compare-and-set races in a row answers 409.
PATCH_ATTEMPTS = 5

# (request, validated body, current record or None, record id) -> (fields to store, sealed secret or None)
Prepare = Callable[
    [web.Request, dict[str, Any], dict[str, Any] | None, str], Awaitable[tuple[dict[str, Any], bytes | None]]
]


async def _no_prepare(
    request: web.Request, body: dict[str, Any], current: dict[str, Any] | None, id: str
) -> tuple[dict[str, Any], bytes | None]:
    return body, None


@dataclass(frozen=True, kw_only=True)
class Resource:
    kind: str  # store kind / table
    path: str  # collection path, e.g. /v1/clusters
    singular: str  # audit type prefix and summaries
    create: Obj
    patch: Obj
    read: Permission
    write: Permission
    view: Callable[[dict[str, Any]], dict[str, Any]] = lambda r: r
    created_view: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    prepare: Prepare = _no_prepare
    filters: dict[str, Spec] = field(default_factory=dict)  # query param == store column
    audit_fields: Callable[[dict[str, Any]], dict[str, Any]] = lambda r: {}
    # OpenAPI: the component name (`Workload`), its plural for operation ids (`Workloads`), the
    # record's schema as GET answers it, and the create answer's when `created_view` differs.
    component: str = ""
    plural: str = ""
    schema: dict[str, Any] = field(default_factory=dict)
    created_schema: dict[str, Any] | None = None
    # Audit type of a PATCH from its body (None or absent: `<singular>.updated`).
    update_type: Callable[[dict[str, Any]], str | None] | None = None
    # /openapi.json schema of the POST body when `create.json_schema()` says less than `prepare` checks.
    create_schema: dict[str, Any] | None = None


async def fetch(request: web.Request, kind: str, singular: str) -> dict[str, Any]:
    """The record named by `{id}` in the path, or 404 not_found."""
    return (await fetch_versioned(request, kind, singular)).record


async def fetch_versioned(request: web.Request, kind: str, singular: str) -> Versioned:
    """The record named by `{id}` in the path and its version, or 404 not_found."""
    registry = request.app[STORE].registry
    wanted = request.match_info["id"]
    found = await registry.get_versioned(kind, await resolve_id(request, kind, wanted) or wanted)
    if found is None:
        raise NotFound(f"no {singular} {wanted}")
    return found


async def resolve_id(request: web.Request, kind: str, id_or_name: str) -> str | None:
    """The id of the record of `kind` whose id or name is `id_or_name`, or None."""
    registry = request.app[STORE].registry
    if await registry.get(kind, id_or_name) is not None:
        return id_or_name
    named = await registry.find(kind, name=id_or_name)
    return named[0]["id"] if named else None


def etag(version: int) -> str:
    """The strong ETag of a record version."""
    return f'"{version}"'


def if_match(request: web.Request) -> set[str] | None:
    """The entity tags of `If-Match` (None when absent; `*` matches any existing record)."""
    header = request.headers.get("If-Match")
    return None if header is None else {tag.strip() for tag in header.split(",") if tag.strip()}


def _labelled(view: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda record: {**view(record), "labels": record.get("labels") or {}}


def _with_labels(fields: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The labels of the body are stored as given, whatever the resource's `prepare` keeps."""
    return {**fields, "labels": body["labels"]} if "labels" in body else fields


def crud_routes(res: Resource) -> list[Route]:
    item = f"{res.path}/{{id}}"
    title = res.singular.replace("_", " ")
    res = dataclasses.replace(
        res,
        create=dataclasses.replace(res.create, fields={**res.create.fields, "labels": LABELS}),
        patch=dataclasses.replace(res.patch, fields={**res.patch.fields, "labels": LABELS}),
        view=_labelled(res.view),
    )

    async def list_items(request: web.Request) -> web.Response:
        filters = {k: v for k, v in request[QUERY].items() if k in res.filters}
        page = await request.app[STORE].registry.list(
            res.kind, limit=request[QUERY]["limit"], after_seq=cursor_seq(request), filters=filters
        )
        page.rows[:] = [res.view(r) for r in page.rows]
        return page_response(page)

    async def create_item(request: web.Request) -> web.Response:
        new = new_id(id_prefix(res.kind))
        fields, secret = await res.prepare(request, request[BODY], None, new)
        fields = _with_labels(fields, request[BODY])
        audit = change_audit(
            request,
            type=f"{res.singular}.created",
            fields_of=lambda r: {"extra": {"id": r["id"], "name": r.get("name")}, **res.audit_fields(r)},
        )
        record = await request.app[STORE].registry.create(
            res.kind, fields, now=now_ts(request), secret=secret, id=new, audit=audit
        )
        request.app[AUDIT].committed(audit)
        shown = (res.created_view or res.view)(record)
        return json_response(shown, status=201, headers={"ETag": etag(1)})

    async def get_item(request: web.Request) -> web.Response:
        found = await fetch_versioned(request, res.kind, title)
        return json_response(res.view(found.record), headers={"ETag": etag(found.version)})

    async def patch_item(request: web.Request) -> web.Response:
        wanted = if_match(request)
        body = request[BODY]
        audit_type = (res.update_type and res.update_type(body)) or f"{res.singular}.updated"
        for _ in range(PATCH_ATTEMPTS):
            current = await fetch_versioned(request, res.kind, title)
            if wanted is not None and "*" not in wanted and etag(current.version) not in wanted:
                raise PreconditionFailed(
                    f"{title} {current.record['id']} is at version {etag(current.version)}, not If-Match",
                    current_etag=etag(current.version),
                )
            changes, secret = await res.prepare(request, body, current.record, current.record["id"])
            changes = _with_labels(changes, body)
            audit = change_audit(
                request,
                type=audit_type,
                fields_of=lambda r: {"extra": {"id": r["id"], "fields": sorted(body)}, **res.audit_fields(r)},
            )
            try:
                updated = await request.app[STORE].registry.update(
                    res.kind,
                    current.record["id"],
                    changes,
                    now=now_ts(request),
                    secret=secret,
                    version=current.version,
                    audit=audit,
                )
            except VersionConflict as exc:
                if wanted is not None:
                    raise PreconditionFailed(
                        f"{title} {current.record['id']} changed while this PATCH was applied",
                        current_etag=etag(exc.current),
                    ) from None
                continue  # another writer came first: re-read, re-check and re-apply this patch
            if updated is None:
                raise NotFound(f"no {title} {current.record['id']}")
            request.app[AUDIT].committed(audit)
            return json_response(res.view(updated.record), headers={"ETag": etag(updated.version)})
        latest = await fetch_versioned(request, res.kind, title)
        raise Conflict(
            f"{title} {latest.record['id']} kept changing while this PATCH was applied; retry",
            current_etag=etag(latest.version),
        )

    async def delete_item(request: web.Request) -> web.Response:
        current = await fetch(request, res.kind, title)
        audit = change_audit(
            request,
            type=f"{res.singular}.deleted",
            fields_of=lambda r: {"extra": {"id": r["id"]}, **res.audit_fields(r)},
        )
        if not await request.app[STORE].registry.delete(res.kind, current["id"], audit=audit):
            raise NotFound(f"no {title} {current['id']}")
        request.app[AUDIT].committed(audit)
        return web.Response(status=204)

    for fn, verb in (
        (list_items, "list"),
        (create_item, "create"),
        (get_item, "get"),
        (patch_item, "update"),
        (delete_item, "delete"),
    ):
        fn.__name__ = f"{verb}_{res.singular}"

    list_query = Obj({**LIST_QUERY, **res.filters})
    record = component(res.component, {**res.schema, "description": f"A {title}"})
    created = component(f"{res.component}Created", res.created_schema) if res.created_schema else record
    listed = page_of(res.component)
    one, many = res.component, res.plural
    return [
        Route(
            "GET",
            res.path,
            list_items,
            res.read,
            f"List {many[0].lower()}{_spaced(many[1:])}",
            query=list_query,
            operation=f"list{many}",
            response=listed,
        ),
        Route(
            "POST",
            res.path,
            create_item,
            res.write,
            f"Create a {title}",
            request=res.create,
            status=201,
            openapi=_request_body(res.create_schema),
            operation=f"create{one}",
            response=created,
        ),
        Route("GET", item, get_item, res.read, f"Get a {title}", operation=f"get{one}", response=record),
        Route(
            "PATCH",
            item,
            patch_item,
            res.write,
            f"Update a {title}",
            request=res.patch,
            operation=f"update{one}",
            response=record,
        ),
        Route(
            "DELETE", item, delete_item, res.write, f"Delete a {title}", status=204, operation=f"delete{one}"
        ),
    ]


def _spaced(camel: str) -> str:
    return "".join(f" {c.lower()}" if c.isupper() else c for c in camel)


def _request_body(schema: dict[str, Any] | None) -> dict[str, Any]:
    if schema is None:
        return {}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
