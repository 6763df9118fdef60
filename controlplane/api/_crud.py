"""Routes for a registry resource from one declaration: list (paginated), create, get, patch, delete.

Every mutation is audited as `<singular>.created|updated|deleted`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from controlplane.appkeys import BODY, QUERY, STORE
from controlplane.errors import NotFound
from controlplane.http import audit_event, cursor_seq, json_response, now_ts, page_response
from controlplane.ids import new_id
from controlplane.pagination import LIST_QUERY
from controlplane.permissions import Permission
from controlplane.routes import Route
from controlplane.store.sql.registry import id_prefix
from controlplane.validation import Obj, Spec

__all__ = ["Resource", "crud_routes", "fetch"]

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
    # Audit type of a PATCH from its body (default `<singular>.updated`).
    update_type: Callable[[dict[str, Any]], str] | None = None


async def fetch(request: web.Request, kind: str, singular: str) -> dict[str, Any]:
    """The record named by `{id}` in the path, or 404 not_found."""
    record = await request.app[STORE].registry.get(kind, request.match_info["id"])
    if record is None:
        raise NotFound(f"no {singular} {request.match_info['id']}")
    return record


def crud_routes(res: Resource) -> list[Route]:
    item = f"{res.path}/{{id}}"
    title = res.singular.replace("_", " ")

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
        record = await request.app[STORE].registry.create(
            res.kind, fields, now=now_ts(request), secret=secret, id=new
        )
        await audit_event(
            request,
            type=f"{res.singular}.created",
            extra={"id": record["id"], "name": record.get("name")},
            **res.audit_fields(record),
        )
        shown = (res.created_view or res.view)(record)
        return json_response(shown, status=201)

    async def get_item(request: web.Request) -> web.Response:
        return json_response(res.view(await fetch(request, res.kind, title)))

    async def patch_item(request: web.Request) -> web.Response:
        current = await fetch(request, res.kind, title)
        changes, secret = await res.prepare(request, request[BODY], current, current["id"])
        record = await request.app[STORE].registry.update(
            res.kind, current["id"], changes, now=now_ts(request), secret=secret
        )
        if record is None:
            raise NotFound(f"no {title} {current['id']}")
        await audit_event(
            request,
            type=res.update_type(request[BODY]) if res.update_type else f"{res.singular}.updated",
            extra={"id": record["id"], "fields": sorted(request[BODY])},
            **res.audit_fields(record),
        )
        return json_response(res.view(record))

    async def delete_item(request: web.Request) -> web.Response:
        current = await fetch(request, res.kind, title)
        if not await request.app[STORE].registry.delete(res.kind, current["id"]):
            raise NotFound(f"no {title} {current['id']}")
        await audit_event(
            request, type=f"{res.singular}.deleted", extra={"id": current["id"]}, **res.audit_fields(current)
        )
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
    return [
        Route("GET", res.path, list_items, res.read, f"List {title}s", query=list_query),
        Route("POST", res.path, create_item, res.write, f"Create a {title}", request=res.create, status=201),
        Route("GET", item, get_item, res.read, f"Get a {title}"),
        Route("PATCH", item, patch_item, res.write, f"Update a {title}", request=res.patch),
        Route("DELETE", item, delete_item, res.write, f"Delete a {title}", status=204),
    ]
