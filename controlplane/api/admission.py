"""POST /v1/admission/mutate: the mutating admission webhook (AdmissionReview admission.k8s.io/v1).

Public (kube-apiserver calls it over TLS without an API key). The scope says which webhook
configuration called: ``namespace`` (the namespace is labelled ``sesame.dev/inject=enabled``:
inject unless the pod opts out) or ``pod`` (default: inject only pods annotated
``sesame.dev/inject: "true"``). It is a path segment (``/v1/admission/mutate/namespace``; webhook
service paths allow no query string) or the ``scope`` query parameter. Pods that did not ask
are not audited (that would be every pod in the cluster); injections, opt-outs, failures,
denials and malformed reviews (`admission.invalid`, answered 400 invalid_request) are.
"""

from __future__ import annotations

from aiohttp import web

from controlplane.api_schemas import component
from controlplane.appkeys import CONFIG
from controlplane.denials import audit_unauthenticated
from controlplane.errors import InvalidRequest
from controlplane.http import audit_event, json_response
from controlplane.injector import Outcome, review
from controlplane.injector_spec import InjectorSettings
from controlplane.routes import Route
from controlplane.validation import decode_json

__all__ = ["INJECTOR", "ROUTES", "setup"]

INJECTOR = web.AppKey("injector", InjectorSettings)
SCOPES = ("pod", "namespace")
_UNAUDITED = ("not_opted_in", "not_a_pod_create")
_OUTCOMES = {"injected": "success", "skipped": "skipped", "denied": "denied"}


def setup(app: web.Application) -> None:
    app[INJECTOR] = app[CONFIG].injector


async def mutate(request: web.Request) -> web.Response:
    scope = request.match_info.get("scope") or request.query.get("scope", "pod")
    try:
        if scope not in SCOPES:
            raise InvalidRequest(f"scope must be one of {', '.join(SCOPES)}", field="scope")
        document = decode_json(await request.read())
        answer, outcome = review(document, request.app[INJECTOR], namespace_opted_in=scope == "namespace")
    except InvalidRequest as exc:  # from anyone who can reach the webhook: aggregated per source
        await audit_unauthenticated(
            request,
            type="admission.invalid",
            reason=exc.code,
            detail=exc.field,
            extra={"field": exc.field, "path": request.path},
        )
        raise
    if outcome.reason not in _UNAUDITED:
        await _audit(request, outcome, document["request"])
    return json_response(answer)


async def mutate_in_scope(request: web.Request) -> web.Response:
    """Same as :func:`mutate`, scope from the path (a distinct OpenAPI operation)."""
    return await mutate(request)


async def _audit(request: web.Request, outcome: Outcome, admission: dict) -> None:
    user = (admission.get("userInfo") or {}).get("username")
    await audit_event(
        request,
        type=f"admission.{outcome.action}",
        outcome=_OUTCOMES[outcome.action],
        actor="admission_webhook",
        reason=outcome.reason,
        extra={
            "namespace": outcome.namespace,
            "pod": outcome.pod,
            "admission_uid": admission.get("uid"),
            "requested_by": user,  # as the apiserver reports it; the webhook does not authenticate it
            "dry_run": bool(admission.get("dryRun")),
            "warnings": outcome.warnings,
            "message": outcome.message or None,
        },
    )


_REVIEW_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["apiVersion", "kind", "request"],
                "properties": {
                    "apiVersion": {"const": "admission.k8s.io/v1"},
                    "kind": {"const": "AdmissionReview"},
                    "request": {
                        "type": "object",
                        "required": ["uid"],
                        "properties": {"uid": {"type": "string", "minLength": 1}},
                    },
                },
                "description": "AdmissionReview (admission.k8s.io/v1)",
            }
        }
    },
}
_REVIEW_ANSWER = component(
    "AdmissionReviewResponse",
    {
        "type": "object",
        "required": ["apiVersion", "kind", "response"],
        "description": "AdmissionReview (admission.k8s.io/v1) with the response: allowed, and a JSONPatch",
        "properties": {
            "apiVersion": {"const": "admission.k8s.io/v1"},
            "kind": {"const": "AdmissionReview"},
            "response": {
                "type": "object",
                "required": ["uid", "allowed"],
                "properties": {
                    "uid": {"type": "string"},
                    "allowed": {"type": "boolean"},
                    "patchType": {"const": "JSONPatch"},
                    "patch": {"type": "string", "description": "base64 of a JSONPatch"},
                    "warnings": {"type": "array", "items": {"type": "string"}},
                    "status": {"type": "object"},
                },
            },
        },
    },
)
_SCOPE_PARAMETER = {
    "name": "scope",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": list(SCOPES)},
}

ROUTES = [
    Route(
        "POST",
        "/v1/admission/mutate",
        mutate,
        None,
        "Mutating admission webhook: inject the sesame proxy into opted-in pods",
        tags=("admission",),
        operation="reviewAdmission",
        response=_REVIEW_ANSWER,
        openapi={
            "parameters": [
                {
                    "name": "scope",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": list(SCOPES), "default": "pod"},
                }
            ],
            "requestBody": _REVIEW_BODY,
        },
    ),
    Route(
        "POST",
        "/v1/admission/mutate/{scope}",
        mutate_in_scope,
        None,
        "Mutating admission webhook with the scope in the path (what the chart's webhooks call)",
        tags=("admission",),
        openapi={"parameters": [_SCOPE_PARAMETER], "requestBody": _REVIEW_BODY},
        operation="reviewAdmissionInScope",
        response=_REVIEW_ANSWER,
    ),
]
