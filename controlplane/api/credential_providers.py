"""/v1/credential-providers: how credentials are minted. Secret config fields are write-only.

Secrets are sealed with the envelope (AES-256-GCM under a per-secret data key wrapped by the
KEK) and never returned, logged or audited; `POST /{id}/rotate` replaces them.

A secret is bound to where it is sent: a PATCH naming a destination field (`token_url`, `ca_pem`
for OAuth2; `controlplane.providers.DESTINATION_FIELDS`) must carry the secret again, or the
stored secret is cleared; either way the PATCH is audited as `credential_provider.rotated`.
A literal loopback/private address in `token_url` is refused (`outbound_address_refused`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controlplane.api._crud import LABELS, Resource, crud_routes, etag, fetch
from controlplane.api._destinations import refuse_private_literal
from controlplane.api_schemas import TIMESTAMP, nullable
from controlplane.appkeys import AUDIT, BODY, ENVELOPE, STORE
from controlplane.errors import Conflict, InvalidRequest, NotFound
from controlplane.http import change_audit, json_response, now_ts
from controlplane.permissions import PROVIDERS_READ, PROVIDERS_WRITE
from controlplane.provider_secrets import seal_secret
from controlplane.providers import DESTINATION_FIELDS
from controlplane.routes import Route
from controlplane.validation import HTTPS_URL_HINT, HTTPS_URL_PATTERN, Dict, Int, List, Obj, Str

__all__ = ["CONFIG_SCHEMAS", "ROUTES", "secret_fields"]

KIND = "credential_providers"
ROLE_ARN = r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}"
GCP_PROVIDER = (
    r"//iam\.googleapis\.com/projects/[0-9]+/locations/global/workloadIdentityPools/[^/\s]+/providers/[^/\s]+"
)

# Per provider type; fields marked secret=True are sealed (match controlplane.providers.SECRET_FIELDS).
CONFIG_SCHEMAS: dict[str, Obj] = {
    "static": Obj(
        {
            "value": Str(required=False, max_len=16384, secret=True, description="API key or token"),
            "username": Str(required=False, max_len=256, description="basic injection: user"),
            "password": Str(
                required=False, max_len=1024, secret=True, description="basic injection: password"
            ),
        }
    ),
    "oauth2-client-credentials": Obj(
        {
            "token_url": Str(
                max_len=2048,
                pattern=HTTPS_URL_PATTERN,
                pattern_hint=HTTPS_URL_HINT,
                description=HTTPS_URL_HINT,
            ),
            "client_id": Str(max_len=512),
            "client_secret": Str(max_len=4096, secret=True),
            "auth_method": Str(
                choices=("client_secret_basic", "client_secret_post"), default="client_secret_basic"
            ),
            "scopes": List(item=Str(max_len=256), required=False, max_items=50),
            "extra_params": Dict(required=False, max_bytes=4096),
            "ca_pem": Str(required=False, max_len=65536),
        }
    ),
    "signed-jwt": Obj(
        {
            "ttl_seconds": Int(required=False, min=1, max=86_400),
        }
    ),
    "aws-sts": Obj(
        {
            "role_arn": Str(max_len=2048, pattern=ROLE_ARN, description="the IAM role the workload assumes"),
            "mode": Str(
                choices=("web-identity", "assume-role"),
                default="web-identity",
                description="web-identity: AssumeRoleWithWebIdentity with a Sesame-signed token (no "
                "AWS secret); assume-role: AssumeRole with base credentials",
            ),
            "sts_endpoint": Str(
                max_len=2048, pattern=HTTPS_URL_PATTERN, pattern_hint=HTTPS_URL_HINT, default="https://sts.amazonaws.com",
                description="e.g. https://sts.eu-west-1.amazonaws.com",
            ),
            "region": Str(required=False, max_len=32, pattern=r"[a-z0-9-]+",
                          description="signing region for AssumeRole (default: the endpoint's)"),
            "audience": Str(required=False, max_len=256, default="sts.amazonaws.com",
                            description="aud of the web identity token"),
            "duration_seconds": Int(required=False, min=900, max=43_200, default=900),
            "ca_pem": Str(required=False, max_len=65536),
            "access_key_id": Str(required=False, max_len=128, secret=True, description="assume-role"),
            "secret_access_key": Str(required=False, max_len=256, secret=True, description="assume-role"),
        }
    ),
    "gcp-workload-identity": Obj(
        {
            "audience": Str(max_len=512, pattern=GCP_PROVIDER,
                            description="//iam.googleapis.com/projects/N/locations/global/"
                            "workloadIdentityPools/POOL/providers/PROVIDER"),
            "token_audience": Str(required=False, max_len=512, description="aud of Sesame's subject token "
                                  "(default: https: + audience)"),
            "service_account": Str(required=False, max_len=320, pattern=r"[^\s/@]+@[^\s/@]+",
                                   description="impersonated with generateAccessToken"),
            "scopes": List(item=Str(max_len=256), required=False, max_items=50),
            "lifetime_seconds": Int(required=False, min=300, max=43_200, default=3600),
            "sts_url": Str(max_len=2048, pattern=HTTPS_URL_PATTERN, pattern_hint=HTTPS_URL_HINT, default="https://sts.googleapis.com/v1/token"),
            "iam_url": Str(max_len=2048, pattern=HTTPS_URL_PATTERN, pattern_hint=HTTPS_URL_HINT, default="https://iamcredentials.googleapis.com"),
            "ca_pem": Str(required=False, max_len=65536),
        }
    ),
    "azure-federated": Obj(
        {
            "tenant_id": Str(max_len=128, pattern=r"[A-Za-z0-9.-]+"),
            "client_id": Str(max_len=128),
            "scope": Str(max_len=512, description="e.g. https://storage.azure.com/.default"),
            "authority_url": Str(max_len=2048, pattern=HTTPS_URL_PATTERN, pattern_hint=HTTPS_URL_HINT, default="https://login.microsoftonline.com"),
            "audience": Str(required=False, max_len=256, default="api://AzureADTokenExchange"),
            "ca_pem": Str(required=False, max_len=65536),
        }
    ),
    "github-app": Obj(
        {
            "app_id": Str(max_len=64, pattern=r"[A-Za-z0-9.]+", description="app ID or client ID"),
            "installation_id": Int(min=1, max=2**53),
            "api_url": Str(max_len=2048, pattern=HTTPS_URL_PATTERN, pattern_hint=HTTPS_URL_HINT, default="https://api.github.com"),
            "repositories": List(item=Str(max_len=100, pattern=r"[A-Za-z0-9._-]+"), required=False,
                                 max_items=500),
            "permissions": Dict(required=False, max_bytes=4096,
                                description="e.g. {\"contents\": \"read\"}"),
            "private_key": Str(max_len=16384, secret=True, description="the app's private key (PEM)"),
            "ca_pem": Str(required=False, max_len=65536),
        }
    ),
}
PROVIDER_TYPES = tuple(CONFIG_SCHEMAS)

PROVIDER_IN = Obj(
    {
        "name": Str(max_len=100),
        "type": Str(choices=PROVIDER_TYPES),
        "config": Dict(
            max_bytes=128 * 1024, default={}, description="per type; secret fields are write-only"
        ),
    }
)
_SECRET_FIELDS = {
    ptype: tuple(n for n, s in schema.fields.items() if getattr(s, "secret", False))
    for ptype, schema in CONFIG_SCHEMAS.items()
}


def _create_schema() -> dict[str, Any]:
    """/openapi.json for POST: one schema per provider type, chosen by `type` (the discriminator)."""
    variants = []
    for ptype, schema in CONFIG_SCHEMAS.items():
        config = schema.json_schema()
        if ptype == "static":  # _check_static
            config["anyOf"] = [{"required": ["value"]}, {"required": ["username", "password"]}]
        if ptype == "aws-sts":  # _check_static: assume-role signs with base credentials
            config["if"] = {"properties": {"mode": {"const": "assume-role"}}, "required": ["mode"]}
            config["then"] = {"required": ["access_key_id", "secret_access_key"]}
        needs_config = ptype == "static" or "required" in config
        variants.append(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "type", *(["config"] if needs_config else [])],
                "properties": {
                    "name": PROVIDER_IN.fields["name"].json_schema(),
                    "type": {"const": ptype},
                    "config": config,
                    "labels": LABELS.json_schema(),
                },
            }
        )
    return {"oneOf": variants, "discriminator": {"propertyName": "type"}}


def _patch_config() -> Obj:
    """Every type's fields (the stored type decides; another type's field is 409 `conflict`). A secret
    field may come only with a field that decides where it is sent (else: /rotate)."""
    fields: dict[str, Any] = {}
    rules: dict[str, Any] = {}
    for ptype, schema in CONFIG_SCHEMAS.items():
        destinations = DESTINATION_FIELDS[ptype]
        for name, spec in schema.partial().fields.items():
            if name in _SECRET_FIELDS[ptype]:
                if not destinations:
                    continue  # only /rotate changes it
                rules[name] = {"anyOf": [{"required": [d]} for d in destinations]}
            fields[name] = spec
    return Obj(fields, required=False, openapi={"dependentSchemas": rules})


PROVIDER_PATCH = Obj(
    {
        "name": Str(required=False, max_len=100),
        "config": _patch_config(),
    }
)
ROTATE_IN = Obj(
    {
        "config": Obj(
            {
                name: CONFIG_SCHEMAS[ptype].partial().fields[name]
                for ptype, names in _SECRET_FIELDS.items()
                for name in names
            },
            description="the new secret fields (of the provider's type; another type's is 409)",
            openapi={"minProperties": 1},
        )
    }
)


def secret_fields(provider_type: str) -> tuple[str, ...]:
    return _SECRET_FIELDS[provider_type]


def _split(provider_type: str, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    secret_names = secret_fields(provider_type)
    public = {k: v for k, v in config.items() if k not in secret_names}
    secret = {k: v for k, v in config.items() if k in secret_names}
    return public, secret


def _check_static(provider_type: str, public: dict[str, Any], secret: dict[str, Any]) -> None:
    """Secrets a provider cannot work without (static; aws-sts in assume-role mode)."""
    if provider_type == "aws-sts" and public.get("mode") == "assume-role":
        for name in ("access_key_id", "secret_access_key"):
            if name not in secret:
                raise InvalidRequest(f"assume-role needs config.{name}", field=f"config.{name}")
    if provider_type != "static":
        return
    if "value" not in secret and not ("username" in public and "password" in secret):
        raise InvalidRequest(
            "static needs config.value, or config.username and config.password", field="config.value"
        )


VIEW_FIELDS = (
    "id", "name", "type", "config", "secret_fields", "secret_rotated_at", "labels", "created_at", "updated_at"
)


def _view(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in VIEW_FIELDS if k != "labels"}


def _destination_fields(config: dict[str, Any], ptype: str | None = None) -> list[str]:
    """The fields of `config` that decide where the provider's secret is sent."""
    types = [ptype] if ptype else list(DESTINATION_FIELDS)
    return sorted({f for t in types for f in DESTINATION_FIELDS.get(t, ()) if f in config})


async def _check_destinations(request: web.Request, ptype: str, config: dict[str, Any]) -> None:
    if "token_url" in config and ptype == "oauth2-client-credentials":
        await refuse_private_literal(request, config["token_url"], "config.token_url")
    for name in ("sts_endpoint", "sts_url", "iam_url", "authority_url", "api_url"):
        if name in config and name in DESTINATION_FIELDS.get(ptype, ()):
            await refuse_private_literal(request, config[name], f"config.{name}")


async def _prepare(
    request: web.Request, body: dict[str, Any], current: dict[str, Any] | None, id: str
) -> tuple[dict[str, Any], bytes | None]:
    if current is None:
        ptype = body["type"]
        config = CONFIG_SCHEMAS[ptype].check(body["config"], "config")
        await _check_destinations(request, ptype, config)
        public, secret = _split(ptype, config)
        _check_static(ptype, public, secret)
        sealed = seal_secret(request.app[ENVELOPE], id, secret) if secret else None
        fields = {
            "name": body["name"],
            "type": ptype,
            "config": public,
            "secret_fields": sorted(secret),
            "secret_rotated_at": now_ts(request) if secret else None,
        }
        return fields, sealed
    changes: dict[str, Any] = {}
    sealed = None
    if "name" in body:
        changes["name"] = body["name"]
    if "config" in body:
        ptype = current["type"]
        _same_type(ptype, body["config"])
        moved = _destination_fields(body["config"], ptype)
        if not moved:
            for key in body["config"]:
                if key in secret_fields(ptype):
                    raise InvalidRequest(
                        f"config.{key} is secret: use POST /v1/credential-providers/{{id}}/rotate "
                        "(or give it with a changed destination field)",
                        field=f"config.{key}",
                    )
        patch = CONFIG_SCHEMAS[ptype].partial().check(body["config"], "config")
        await _check_destinations(request, ptype, patch)
        public, secret = _split(ptype, patch)
        changes["config"] = {**current["config"], **public}
        if moved:  # the secret goes where it was given for, or nowhere: re-sealed or cleared
            sealed = seal_secret(request.app[ENVELOPE], id, secret)
            changes["secret_fields"] = sorted(secret)
            changes["secret_rotated_at"] = now_ts(request)
    return changes, sealed


def _same_type(ptype: str, config: dict[str, Any], names: tuple[str, ...] | None = None) -> None:
    """409 for a field of another provider type: the request is fine, the stored type decides."""
    known = names if names is not None else tuple(CONFIG_SCHEMAS[ptype].fields)
    for key in config:
        if key not in known:
            raise Conflict(
                f"config.{key} is not a field of {ptype} providers ({', '.join(known) or 'none'})",
                field=f"config.{key}",
            )


async def rotate_credential_provider(request: web.Request) -> web.Response:
    """Replace every secret field of the provider with the given ones."""
    current = await fetch(request, KIND, "credential provider")
    ptype = current["type"]
    names = secret_fields(ptype)
    given = request[BODY]["config"]
    if not given:
        raise InvalidRequest("config must hold at least one secret field", field="config")
    _same_type(ptype, given, names)
    secret = CONFIG_SCHEMAS[ptype].partial().check(given, "config")
    try:
        _check_static(ptype, current["config"], secret)
    except InvalidRequest as exc:  # the stored username decides: a conflict with the record
        raise Conflict(exc.message, field=exc.field) from None
    sealed = seal_secret(request.app[ENVELOPE], current["id"], secret)
    now = now_ts(request)
    audit = change_audit(
        request,
        type="credential_provider.rotated",
        fields_of=lambda r: {"extra": {"id": r["id"], "fields": sorted(secret)}},
    )
    updated = await request.app[STORE].registry.update(
        KIND,
        current["id"],
        {"secret_fields": sorted(secret), "secret_rotated_at": now},
        now=now,
        secret=sealed,
        audit=audit,
    )
    if updated is None:
        raise NotFound(f"no credential provider {current['id']}")
    request.app[AUDIT].committed(audit)
    return json_response(_view(updated.record), headers={"ETag": etag(updated.version)})


ROUTES = [
    *crud_routes(
        Resource(
            kind=KIND,
            path="/v1/credential-providers",
            singular="credential_provider",
            create=PROVIDER_IN,
            patch=PROVIDER_PATCH,
            create_schema=_create_schema(),
            update_type=lambda body: (
                "credential_provider.rotated" if _destination_fields(body.get("config") or {}) else None
            ),
            read=PROVIDERS_READ,
            write=PROVIDERS_WRITE,
            view=_view,
            prepare=_prepare,
            filters={"type": Str(required=False, choices=PROVIDER_TYPES)},
            component="CredentialProvider",
            plural="CredentialProviders",
            schema={
                "type": "object",
                "required": list(VIEW_FIELDS),
                "properties": {
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                    "type": {"type": "string", "enum": list(PROVIDER_TYPES)},
                    "config": {"type": "object", "description": "the non-secret config fields"},
                    "secret_fields": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "names of the stored secret fields (write-only)",
                    },
                    "secret_rotated_at": nullable(TIMESTAMP),
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "created_at": TIMESTAMP,
                    "updated_at": TIMESTAMP,
                },
            },
        )
    ),
    Route(
        "POST",
        "/v1/credential-providers/{id}/rotate",
        rotate_credential_provider,
        PROVIDERS_WRITE,
        "Replace a credential provider's secret",
        request=ROTATE_IN,
        operation="rotateCredentialProvider",
        response={"$ref": "#/components/schemas/CredentialProvider"},
    ),
]
