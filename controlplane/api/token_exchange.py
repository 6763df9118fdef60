"""POST /v1/token-exchange (RFC 8693), the control plane's JWKS and OIDC discovery, key rotation."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from controlplane.api_schemas import TIMESTAMP, component, nullable
from controlplane.appkeys import CONFIG, REQUEST_ID
from controlplane.clock import format_ts
from controlplane.errors import InvalidRequest, SesameError
from controlplane.exchange_services import EXCHANGE, SIGNING_KEYS, setup
from controlplane.http import audit_event, json_response, read_body
from controlplane.permissions import Permission, Role
from controlplane.routes import Route
from controlplane.signing_keys import discovery_document
from controlplane.source_limits import source_of
from controlplane.token_exchange import ApprovalPending
from controlplane.validation import Obj, Str, decode_json, parse

__all__ = ["EXCHANGE_IN", "KEYS_ROTATE", "ROUTES", "setup"]

JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
FORM = "application/x-www-form-urlencoded"
# Oversized tokens get invalid_subject_token (token_too_large) from attestation, not a 400 here.
MAX_SUBJECT_TOKEN_CHARS = 64 * 1024

KEYS_ROTATE = Permission("keys.rotate", Role.OWNER, "Rotate the control plane's JWT signing key")

EXCHANGE_IN = Obj(
    {
        "subject_token": Str(
            max_len=MAX_SUBJECT_TOKEN_CHARS,
            secret=True,
            description="the pod's projected service-account token",
        ),
        "subject_token_type": Str(choices=(JWT_TYPE,)),
        "audience": Str(max_len=2048, description="the target's audience"),
        "requested_token_type": Str(required=False, choices=(ACCESS_TOKEN_TYPE, JWT_TYPE)),
        "grant_type": Str(required=False, choices=("urn:ietf:params:oauth:grant-type:token-exchange",)),
        "scope": Str(required=False, min_len=0, max_len=1024, description="accepted and ignored"),
    }
)


async def _read_exchange(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request)
    if request.content_type == FORM:
        try:
            pairs = parse_qs(raw.decode(), keep_blank_values=True, strict_parsing=bool(raw))
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest("request body is not valid form data") from None
        data: Any = {}
        for key, values in pairs.items():
            if len(values) != 1:
                raise InvalidRequest(f"{key} must be given once", field=key)
            data[key] = values[0]
    else:
        data = decode_json(raw)
    return parse(EXCHANGE_IN, data)


async def token_exchange(request: web.Request) -> web.Response:
    service = request.app[EXCHANGE]
    correlation_id = request.get(REQUEST_ID)
    try:
        body = await _read_exchange(request)
    except SesameError as exc:
        ctx = {"source": source_of(request)}
        await service.denied(exc.code, ctx, correlation_id, detail=getattr(exc, "field", None))
        raise
    result = await service.exchange(
        subject_token=body["subject_token"],
        audience=body["audience"],
        correlation_id=correlation_id,
        source=source_of(request),
    )
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if isinstance(result, ApprovalPending):
        return json_response(result.response(), status=202, headers=headers)
    return json_response(result.credential.response(), headers=headers)


async def jwks(request: web.Request) -> web.Response:
    keys = await request.app[SIGNING_KEYS].jwks()
    return json_response(keys, headers={"Cache-Control": "max-age=60"})


async def openid_configuration(request: web.Request) -> web.Response:
    document = discovery_document(request.app[CONFIG].issuer_url)
    return json_response(document, headers={"Cache-Control": "max-age=300"})


async def rotate_keys(request: web.Request) -> web.Response:
    key, retired = await request.app[SIGNING_KEYS].rotate()
    active_from = format_ts(key.active_from)
    await audit_event(
        request,
        type="signing_key.rotated",
        extra={"kid": key.kid, "retired": retired, "active_from": active_from},
    )
    return json_response({"kid": key.kid, "retired": retired, "active_from": active_from})


_CREDENTIAL = component(
    "IssuedCredential",
    {
        "type": "object",
        "required": ["access_token", "issued_token_type", "token_type", "expires_in"],
        "properties": {
            "access_token": {"type": "string"},
            "issued_token_type": {"type": "string"},
            "token_type": {"type": "string"},
            "expires_in": {"type": "integer", "description": "seconds"},
        },
    },
)
_PENDING = component(
    "ApprovalPending",
    {
        "type": "object",
        "required": ["status", "approval_id"],
        "properties": {"status": {"const": "approval_pending"}, "approval_id": {"type": "string"}},
    },
)
_JWKS = component(
    "JsonWebKeySet",
    {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {"type": "object", "required": ["kid", "kty"]}}},
    },
)
_OIDC = component(
    "OpenIdConfiguration",
    {
        "type": "object",
        "required": ["issuer", "jwks_uri"],
        "properties": {"issuer": {"type": "string"}, "jwks_uri": {"type": "string"}},
    },
)
_ROTATED = component(
    "SigningKeyRotation",
    {
        "type": "object",
        "required": ["kid", "retired", "active_from"],
        "properties": {
            "kid": {"type": "string", "description": "the new current key"},
            "retired": nullable({"type": "string"}),
            "active_from": nullable(TIMESTAMP),
        },
    },
)

_EXCHANGE_DOC = {
    "description": "No Authorization header: the caller authenticates with the body's `subject_token`, "
    "the pod's projected Kubernetes service-account token (the same token the `serviceAccountToken` "
    "scheme carries on /v1/proxy/*), verified against a registered cluster.",
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": EXCHANGE_IN.json_schema()},
            FORM: {"schema": EXCHANGE_IN.json_schema()},
        },
    },
    "responses": {
        "202": {
            "description": "approval_pending: an approver must decide first",
            "content": {"application/json": {"schema": _PENDING}},
        },
        **{
            code: {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            for code, text in (
                ("400", "invalid_request"),
                ("401", "invalid_subject_token"),
                ("403", "workload_revoked | policy_denied"),
                ("404", "unknown_workload | unknown_target"),
                ("429", "rate_limited"),
                ("502", "upstream_mint_failed"),
            )
        },
    },
}

ROUTES = [
    Route(
        "POST",
        "/v1/token-exchange",
        token_exchange,
        None,
        "Exchange a Kubernetes service-account token for a target credential (RFC 8693)",
        openapi=_EXCHANGE_DOC,
        tags=("token-exchange",),
        operation="exchangeToken",
        response=_CREDENTIAL,
    ),
    Route(
        "GET",
        "/v1/jwks",
        jwks,
        None,
        "Public keys of the control plane's signed JWTs",
        tags=("keys",),
        content_type="application/json",
        operation="getJwks",
        response=_JWKS,
    ),
    Route(
        "GET",
        "/.well-known/openid-configuration",
        openid_configuration,
        None,
        "OIDC discovery for the control plane's signed JWTs",
        tags=("keys",),
        operation="getOpenIdConfiguration",
        response=_OIDC,
    ),
    Route(
        "POST",
        "/v1/keys/rotate",
        rotate_keys,
        KEYS_ROTATE,
        "Make a new current signing key",
        tags=("keys",),
        operation="rotateSigningKey",
        response=_ROTATED,
    ),
]
