"""AWS Signature Version 4 (header signing): canonical request, signing key, Authorization value.

Standard library only; shared by the proxy (re-signing governed requests, proxy/sigv4.py) and the
control plane (AssumeRole with base credentials, controlplane/providers/aws_sts.py). Proven against
AWS's published SigV4 test suite (tests/proxy/test_sigv4.py).
Spec: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

__all__ = [
    "ALGORITHM",
    "AwsCredentials",
    "Headers",
    "Scope",
    "amz_date",
    "canonical_request",
    "host_scope",
    "sign_headers",
]

ALGORITHM = "AWS4-HMAC-SHA256"
# Not signed: hop-by-hop fields, and those botocore leaves out because proxies and clients change them.
_UNSIGNED_HEADERS = frozenset(
    {"authorization", "user-agent", "expect", "x-amzn-trace-id", "connection", "keep-alive",
     "proxy-authorization", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
_REGION = re.compile(r"[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d")
_AWS_DOMAIN = re.compile(r"\.amazonaws\.com(?:\.cn)?")
_UNRESERVED = "-_.~"

Headers = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never the secret, never the token
        return f"AwsCredentials({self.access_key_id[:4]}…)"


@dataclass(frozen=True, slots=True)
class Scope:
    region: str
    service: str


def amz_date(now: float | None = None) -> str:
    """X-Amz-Date for `now` (seconds since the epoch; default: the current time)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))


def host_scope(host: str) -> Scope | None:
    """`sts.amazonaws.com`, `dynamodb.<region>.amazonaws.com`, `<bucket>.s3.<region>.amazonaws.com`,
    `s3-<region>.amazonaws.com`; global endpoints sign for us-east-1."""
    m = _AWS_DOMAIN.search(host)
    if m is None or m.end() != len(host):
        return None
    labels = host[: m.start()].split(".")
    for i, label in enumerate(labels):
        if label == "s3" or label.startswith("s3-"):
            rest = label[3:] or (labels[i + 1] if i + 1 < len(labels) else "")
            return Scope(rest if _REGION.fullmatch(rest) else "us-east-1", "s3")
    if len(labels) >= 2 and _REGION.fullmatch(labels[-1]):
        return Scope(labels[-1], labels[-2])
    return Scope("us-east-1", labels[-1])


def _uri_encode(text: str, safe: str = "") -> str:
    return quote(text, safe=_UNRESERVED + safe)


def _encode_once(path: str) -> str:
    """Percent-encode what is not yet encoded, keeping existing %XX escapes (S3's canonical URI)."""
    parts = re.split(r"(%[0-9A-Fa-f]{2})", path)
    return "".join(p.upper() if i % 2 else _uri_encode(p, "/") for i, p in enumerate(parts))


def _normalize_path(path: str) -> str:
    """RFC 3986 §5.2.4 dot-segment removal and empty segments collapsed (every service but S3)."""
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    normalized = "/" + "/".join(out)
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return normalized


def _canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((_uri_encode(unquote(key)), _uri_encode(unquote(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(
    method: str, target: str, headers: Headers, payload_hash: str, *, service: str
) -> tuple[str, str]:
    """(canonical request, signed headers) for an origin-form `target` and the headers to send."""
    path, _, query = target.partition("?")
    if service == "s3":
        uri = _encode_once(path or "/")
    else:
        uri = _uri_encode(_normalize_path(unquote(path or "/")), "/")
    values: dict[str, list[str]] = {}
    for name, value in headers:
        lname = name.lower()
        if lname not in _UNSIGNED_HEADERS:
            values.setdefault(lname, []).append(" ".join(value.split()))
    names = sorted(values)
    canonical_headers = "".join(f"{n}:{','.join(values[n])}\n" for n in names)
    signed = ";".join(names)
    creq = "\n".join([method, uri, _canonical_query(query), canonical_headers, signed, payload_hash])
    return creq, signed


def _signing_key(secret: str, day: str, scope: Scope) -> bytes:
    key = hmac.new(("AWS4" + secret).encode(), day.encode(), hashlib.sha256).digest()
    for part in (scope.region, scope.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign_headers(
    method: str,
    target: str,
    headers: Headers,
    payload_hash: str,
    creds: AwsCredentials,
    scope: Scope,
    amz_date: str,
) -> str:
    """The Authorization value for a request whose `headers` already hold Host and X-Amz-Date."""
    creq, signed = canonical_request(method, target, headers, payload_hash, service=scope.service)
    day = amz_date[:8]
    credential_scope = f"{day}/{scope.region}/{scope.service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, credential_scope, hashlib.sha256(creq.encode()).hexdigest()]
    )
    signature = hmac.new(_signing_key(creds.secret_access_key, day, scope), string_to_sign.encode(),
                         hashlib.sha256).hexdigest()
    return f"{ALGORITHM} Credential={creds.access_key_id}/{credential_scope}, SignedHeaders={signed}, " \
           f"Signature={signature}"
