"""AWS Signature Version 4 re-signing of a governed request (header signing).

The app's SDK signs with placeholder keys; the proxy removes that signature and signs the request
again with the session credentials the control plane issued for the route. A compact signer
(stdlib `hmac`/`hashlib`), proven against AWS's published SigV4 test suite
(tests/proxy/test_sigv4.py); botocore is not loaded (docs/token-exchange.md says why).

Spec: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
and, for S3, https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html.

The credential (`access_token` of an `aws-sts` provider) is the JSON object of the AWS CLI's
`credential_process` output: `{"Version": 1, "AccessKeyId", "SecretAccessKey", "SessionToken",
"Expiration"}`; it is never logged.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

from proxy.errors import BadRequest, InvalidCredential
from proxy.http_messages import Request
from sesame_sigv4 import AwsCredentials, Headers, Scope, amz_date, host_scope, sign_headers

__all__ = ["UNSIGNED_PAYLOAD", "Signer", "compile_signer", "parse_credentials", "resign", "scope_for"]

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# x-amz-content-sha256 values whose body framing carries no signature of its own: kept as they are.
_UNSIGNED_MARKERS = {UNSIGNED_PAYLOAD, "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}
# Chunk signatures chain from the seed signature made with the app's (placeholder) key.
_SIGNED_STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Removed from the app's request before signing: the SDK's signature and its placeholder identity.
_REPLACED = frozenset({"authorization", "x-amz-date", "x-amz-security-token"})
_SCOPE = re.compile(r"Credential=[^/,\s]*/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")


def parse_credentials(token: str) -> AwsCredentials:
    """From the `credential_process` JSON the control plane issues for an `aws-sts` provider."""
    creds = None
    try:
        raw = json.loads(token)
        creds = AwsCredentials(
            str(raw["AccessKeyId"]), str(raw["SecretAccessKey"]), raw.get("SessionToken") or None
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    if creds is None or not creds.access_key_id or not creds.secret_access_key:
        raise InvalidCredential("the credential for this AWS route is not AWS session credentials")
    return creds


def scope_for(host: str, headers: Headers, *, region: str | None, service: str | None) -> Scope:
    """Region and service: the target's configuration, else the scope the SDK signed for (it knows
    each service's signing name), else the AWS host name."""
    if region and service:
        return Scope(region, service)
    for name, value in headers:
        if name.lower() == "authorization":
            m = _SCOPE.search(value)
            if m:
                return Scope(region or m.group(1), service or m.group(2))
    found = host_scope(host.lower())
    if found is not None:
        return Scope(region or found.region, service or found.service)
    raise BadRequest("no AWS region and service for this request: configure them on the target")


def _payload_hash(headers: Headers, body: bytes | None, service: str) -> str:
    """The body's SHA-256 when the whole body is at hand; for a streamed body (over 64 KiB, chunked or
    Expect: 100-continue) S3's own x-amz-content-sha256 (S3 checks the body against it) or
    UNSIGNED-PAYLOAD; other services need the body."""
    declared = next((v.strip() for n, v in headers if n.lower() == "x-amz-content-sha256"), None)
    if declared is not None and declared.startswith(_SIGNED_STREAMING):
        raise BadRequest(
            "aws-chunked uploads signed chunk by chunk cannot be re-signed; let the SDK send "
            "UNSIGNED-PAYLOAD or STREAMING-UNSIGNED-PAYLOAD-TRAILER (its default over HTTPS)"
        )
    if declared in _UNSIGNED_MARKERS:
        return declared  # type: ignore[return-value]
    if body is not None:
        return hashlib.sha256(body).hexdigest()
    if service == "s3":
        return declared if declared is not None and _HEX64.fullmatch(declared) else UNSIGNED_PAYLOAD
    raise BadRequest(f"{service} needs the payload signed: send bodies of at most 64 KiB with "
                     "Content-Length (no Expect: 100-continue)")


def resign(
    method: str,
    target: str,
    headers: Headers,
    creds: AwsCredentials,
    scope: Scope,
    body: bytes | None,
    *,
    now: Callable[[], float | None] = lambda: None,
) -> None:
    """Replace the app's SigV4 signature in `headers` (edited in place) with one made with `creds`."""
    payload = _payload_hash(headers, body, scope.service)
    date = amz_date(now())
    kept = [(n, v) for n, v in headers if n.lower() not in _REPLACED and n.lower() != "x-amz-content-sha256"]
    kept.append(("X-Amz-Date", date))
    if scope.service == "s3" or any(n.lower() == "x-amz-content-sha256" for n, _ in headers):
        kept.append(("X-Amz-Content-Sha256", payload))
    if creds.session_token:
        kept.append(("X-Amz-Security-Token", creds.session_token))
    kept.append(("Authorization", sign_headers(method, target, kept, payload, creds, scope, date)))
    headers[:] = kept


Signer = Callable[[Request, str, "bytes | None"], None]


def compile_signer(host: str, *, region: str | None, service: str | None) -> Signer:
    """The per-route signing step: `signer(request, credential, body or None)` re-signs in place."""
    last: list[tuple[str, AwsCredentials]] = []  # the parsed credential, kept while it is the same

    def signer(req: Request, token: str, body: bytes | None) -> None:
        if last and last[0][0] == token:
            creds = last[0][1]
        else:
            creds = parse_credentials(token)
            last[:] = [(token, creds)]
        scope = scope_for(host, req.headers, region=region, service=service)
        resign(req.method, req.target, req.headers, creds, scope, body)

    return signer
