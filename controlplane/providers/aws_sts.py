"""The `aws-sts` provider: temporary AWS credentials for the workload, from STS.

- `web-identity` (default): `AssumeRoleWithWebIdentity` with a JWT the control plane signs for the
  workload (`aud` = `sts.amazonaws.com`, `sub` = `sesame://<cluster>/ns/<ns>/sa/<sa>`, session tags
  in the `https://aws.amazon.com/tags` claim); the control plane holds no AWS secret at all.
- `assume-role`: `AssumeRole` signed (SigV4) with configured base credentials (the write-only
  secrets `access_key_id`, `secret_access_key`), with the workload's session tags.

Wire format (Query API, form-encoded POST, XML answers):
https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html,
https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html,
https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html.
The issued credential is the JSON of the AWS CLI's `credential_process` output (proxy/sigv4.py
parses it and signs each request with it); it lives as long as STS says (`Expiration`).
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from urllib.parse import urlencode, urlsplit

from controlplane.attest.identity import Identity
from controlplane.providers.base import (
    MintRequest,
    ProviderDenied,
    ProviderUnavailable,
    UpstreamMintFailed,
)
from controlplane.providers.cached import (
    UPSTREAM_TIMEOUT_SECONDS,
    FederatingProvider,
    UpstreamToken,
    parse_rfc3339,
)
from controlplane.providers.upstream import upstream_request
from sesame_sigv4 import AwsCredentials, Scope, amz_date, host_scope, sign_headers

__all__ = ["DEFAULT_STS_ENDPOINT", "AwsStsProvider"]

DEFAULT_STS_ENDPOINT = "https://sts.amazonaws.com"
DEFAULT_AUDIENCE = "sts.amazonaws.com"
MIN_DURATION_SECONDS = 900  # STS's floor for DurationSeconds
_WEB_IDENTITY_TOKEN_TTL = 300
_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"
# STS error codes that are the caller's (or the trust's) fault: the federation was refused.
_DENIED = {
    "AccessDenied", "InvalidIdentityToken", "ExpiredToken", "ExpiredTokenException", "IDPRejectedClaim",
    "InvalidClientTokenId", "SignatureDoesNotMatch", "RegionDisabledException", "PackedPolicyTooLarge",
    "MalformedPolicyDocument", "ValidationError", "InvalidParameterValue",
}
_UNAVAILABLE = {"IDPCommunicationError", "Throttling", "ServiceUnavailable", "InternalFailure"}
_TAG_VALUE_UNSAFE = re.compile(r"[^\w .:/=+\-@]")
_SESSION_UNSAFE = re.compile(r"[^\w+=,.@-]")


def session_name(identity: Identity) -> str:
    """`<namespace>.<service-account>` in STS's character set, at most 64 characters."""
    name = _SESSION_UNSAFE.sub("-", f"{identity.namespace}.{identity.service_account}")
    if len(name) > 64:
        name = name[:55] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return name


def session_tags(identity: Identity) -> dict[str, str]:
    """The workload's identity as session tags (values in IAM's tag character set, ≤ 256)."""
    tags = {
        "sesame-cluster": identity.cluster,
        "sesame-namespace": identity.namespace,
        "sesame-service-account": identity.service_account,
    }
    return {k: _TAG_VALUE_UNSAFE.sub("-", v)[:256] for k, v in tags.items()}


class AwsStsProvider(FederatingProvider):
    """Config: `role_arn`, `mode` (`web-identity` | `assume-role`), `sts_endpoint`, `region` (for
    signing AssumeRole; default: the endpoint's), `audience`, `duration_seconds` (≥ 900), `ca_pem`.
    Secret (assume-role): `access_key_id`, `secret_access_key`."""

    token_type = "N_A"  # RFC 8693 §2.2.1: not an access token (session credentials)

    async def _fetch(self, request: MintRequest) -> UpstreamToken:
        config, identity = request.config, request.identity
        role_arn = config.get("role_arn")
        endpoint = config.get("sts_endpoint") or DEFAULT_STS_ENDPOINT
        if not isinstance(role_arn, str) or not isinstance(endpoint, str):
            raise UpstreamMintFailed("the aws-sts provider needs role_arn")
        duration = max(MIN_DURATION_SECONDS, int(config.get("duration_seconds") or MIN_DURATION_SECONDS))
        form = {"Version": "2011-06-15", "RoleArn": role_arn, "RoleSessionName": session_name(identity),
                "DurationSeconds": str(duration)}
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        tags = session_tags(identity)
        if config.get("mode", "web-identity") == "assume-role":
            form["Action"] = "AssumeRole"
            for i, (k, v) in enumerate(tags.items(), start=1):
                form[f"Tags.member.{i}.Key"], form[f"Tags.member.{i}.Value"] = k, v
            body = urlencode(form)
            headers.update(self._signed(endpoint, config.get("region"), request, body))
            result = "AssumeRoleResult"
        else:
            form["Action"] = "AssumeRoleWithWebIdentity"
            form["WebIdentityToken"] = await self._workload_token(
                request,
                str(config.get("audience") or DEFAULT_AUDIENCE),
                ttl=_WEB_IDENTITY_TOKEN_TTL,
                extra={"https://aws.amazon.com/tags": {"principal_tags": {k: [v] for k, v in tags.items()}}},
            )
            body = urlencode(form)
            result = "AssumeRoleWithWebIdentityResult"
        status, raw = await upstream_request(
            self._http, "POST", endpoint, what="AWS STS endpoint", timeout_seconds=UPSTREAM_TIMEOUT_SECONDS,
            ca_pem=config.get("ca_pem"), data=body.encode(), headers=headers,
        )
        return _parse(status, raw, result)

    def _signed(self, endpoint: str, region: object, request: MintRequest, body: str) -> dict[str, str]:
        secret = request.secret
        key_id, secret_key = secret.get("access_key_id"), secret.get("secret_access_key")
        if not (isinstance(key_id, str) and isinstance(secret_key, str)):
            raise UpstreamMintFailed("assume-role needs the secrets access_key_id and secret_access_key")
        url = urlsplit(endpoint)
        if not (isinstance(region, str) and region):  # sts.<region>.amazonaws.com, else us-east-1
            found = host_scope((url.hostname or "").lower())
            region = found.region if found is not None else "us-east-1"
        scope = Scope(region, "sts")
        date = amz_date(self._clock.time())
        headers = [("Host", url.netloc), ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
                   ("X-Amz-Date", date)]
        payload = hashlib.sha256(body.encode()).hexdigest()
        auth = sign_headers("POST", url.path or "/", headers, payload,
                            AwsCredentials(key_id, secret_key), scope, date)
        return {"X-Amz-Date": date, "Authorization": auth}


def _parse(status: int, raw: bytes, result: str) -> UpstreamToken:
    try:
        root = ET.fromstring(raw)
    except ET.ParseError:
        root = None
    if status != 200:
        code = root.findtext(".//{*}Error/{*}Code") if root is not None else None
        named = f" ({code})" if code and re.fullmatch(r"[A-Za-z.]{1,64}", code) else ""
        if code in _UNAVAILABLE:
            raise ProviderUnavailable(f"AWS STS answered {status}{named}")
        if code in _DENIED or status in (400, 403):
            raise ProviderDenied(f"AWS STS refused the role for this workload{named}")
        raise UpstreamMintFailed(f"AWS STS answered {status}{named}")
    creds = root.find(f"{_NS}{result}/{_NS}Credentials") if root is not None else None
    if creds is None:
        raise UpstreamMintFailed("AWS STS answered no Credentials")
    fields = {name: (creds.findtext(f"{_NS}{name}") or "").strip()
              for name in ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")}
    expires_at = parse_rfc3339(fields["Expiration"], "AWS STS")
    if not (fields["AccessKeyId"] and fields["SecretAccessKey"] and fields["SessionToken"]):
        raise UpstreamMintFailed("AWS STS answered incomplete Credentials")
    body = json.dumps({"Version": 1, **fields}, separators=(",", ":"))
    return UpstreamToken(body, expires_at)
