"""/v1/api-keys: admin keys (seed 004). The full key is returned once, at creation."""

from __future__ import annotations

from aiohttp import web

from controlplane.api_schemas import TIMESTAMP, component, nullable, page_of
from controlplane.appkeys import API_KEYS, BODY, PRINCIPAL, QUERY, RATE_LIMITER, STORE
from controlplane.errors import NotFound
from controlplane.http import audit_event, cursor_seq, json_response, page_response
from controlplane.pagination import LIST_QUERY
from controlplane.permissions import API_KEYS_READ, API_KEYS_WRITE, ROLE_NAMES, Role
from controlplane.routes import Route
from controlplane.validation import Obj, Str

__all__ = ["ROUTES"]

API_KEY_IN = Obj(
    {
        "name": Str(max_len=200),
        "role": Str(choices=ROLE_NAMES, default="viewer"),
    }
)


async def list_api_keys(request: web.Request) -> web.Response:
    page = await request.app[STORE].api_keys.list(
        limit=request[QUERY]["limit"], after_seq=cursor_seq(request)
    )
    return page_response(page)


async def create_api_key(request: web.Request) -> web.Response:
    body = request[BODY]
    record, plaintext = await request.app[API_KEYS].create(name=body["name"], role=Role.parse(body["role"]))
    await audit_event(
        request,
        type="api_key.created",
        extra={"id": record.id, "name": record.name, "role": record.role, "prefix": record.prefix},
    )
    return json_response({**record.public(), "key": plaintext}, status=201)


async def delete_api_key(request: web.Request) -> web.Response:
    key_id = request.match_info["id"]
    if not await request.app[API_KEYS].revoke(key_id):
        raise NotFound(f"no API key {key_id}")
    await request.app[RATE_LIMITER].forget(key_id)
    await audit_event(
        request, type="api_key.revoked", extra={"id": key_id, "self": request[PRINCIPAL].id == key_id}
    )
    return web.Response(status=204)


_API_KEY_FIELDS = {
    "id": {"type": "string"},
    "name": {"type": "string"},
    "role": {"type": "string", "enum": list(ROLE_NAMES)},
    "prefix": {"type": "string", "description": "the key's first characters, to recognise it"},
    "created_at": TIMESTAMP,
    "last_used_at": nullable(TIMESTAMP),
}
_API_KEY = {"type": "object", "required": list(_API_KEY_FIELDS), "properties": _API_KEY_FIELDS}
component("ApiKey", _API_KEY)

ROUTES = [
    Route(
        "GET",
        "/v1/api-keys",
        list_api_keys,
        API_KEYS_READ,
        "List admin API keys",
        query=Obj(LIST_QUERY),
        operation="listApiKeys",
        response=page_of("ApiKey"),
    ),
    Route(
        "POST",
        "/v1/api-keys",
        create_api_key,
        API_KEYS_WRITE,
        "Create an API key (returned once)",
        request=API_KEY_IN,
        status=201,
        operation="createApiKey",
        response=component(
            "ApiKeyCreated",
            {
                "type": "object",
                "required": [*_API_KEY_FIELDS, "key"],
                "properties": {**_API_KEY_FIELDS, "key": {"type": "string", "description": "shown once"}},
            },
        ),
    ),
    Route(
        "DELETE",
        "/v1/api-keys/{id}",
        delete_api_key,
        API_KEYS_WRITE,
        "Revoke an API key at once",
        status=204,
        operation="deleteApiKey",
    ),
]
