"""sesame_sigv4 and proxy/sigv4.py against AWS's published Signature Version 4 test suite.

The vectors in aws4_testsuite/ are AWS's (Apache-2.0, LICENSE and NOTICE beside them), copied from
botocore's tests/unit/auth/aws4_testsuite (commit 0e6e2404b85dc336dd2889814e089bde7d1a4c55). Each
case is a raw request (.req), its canonical request (.creq), string to sign (.sts) and Authorization
header (.authz), for access key AKIDEXAMPLE, service `service`, region us-east-1, 20150830T123600Z.
Every case runs, including the three botocore skips (repeated query keys) and get-space.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from proxy.errors import BadRequest, InvalidCredential
from proxy.sigv4 import UNSIGNED_PAYLOAD, parse_credentials, resign, scope_for
from sesame_sigv4 import AwsCredentials, Scope, canonical_request, sign_headers

SUITE = Path(__file__).parent / "aws4_testsuite"
CREDS = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
SCOPE = Scope("us-east-1", "service")
DATE = "20150830T123600Z"


def _cases() -> list[str]:
    return sorted(str(p.parent.relative_to(SUITE)) for p in SUITE.rglob("*.req"))


def _parse(raw: str) -> tuple[str, str, list[tuple[str, str]], bytes]:
    head, _, body = raw.partition("\n\n")
    lines = head.split("\n")
    method, rest = lines[0].split(" ", 1)
    target = rest.rsplit(" ", 1)[0]
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[:1] in (" ", "\t"):  # obsolete line folding: a continuation of the previous field
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, _, value = line.partition(":")
        headers.append((name, value))
    return method, target, headers, body.encode()


def _read(case: str, ext: str) -> str:
    return (SUITE / case / f"{Path(case).name}.{ext}").read_text().replace("\r", "")


def test_the_suite_is_all_there() -> None:
    assert len(_cases()) >= 30  # the vectors were not lost in a copy


@pytest.mark.parametrize("case", _cases())
def test_aws_sigv4_suite(case: str) -> None:
    method, target, headers, body = _parse(_read(case, "req"))
    token = next((v for n, v in headers if n.lower() == "x-amz-security-token"), None)
    if token is None and "\nx-amz-security-token:" in _read(case, "creq"):  # added by the signer
        token = _read(case, "creq").split("\nx-amz-security-token:", 1)[1].split("\n", 1)[0]
        headers.append(("X-Amz-Security-Token", token))
    creds = AwsCredentials(CREDS.access_key_id, CREDS.secret_access_key, token)
    payload = hashlib.sha256(body).hexdigest()
    creq, _ = canonical_request(method, target, headers, payload, service=SCOPE.service)
    assert creq == _read(case, "creq")
    assert sign_headers(method, target, headers, payload, creds, SCOPE, DATE) == _read(case, "authz")


def _sdk_headers(**extra: str) -> list[tuple[str, str]]:
    auth = ("AWS4-HMAC-SHA256 Credential=PLACEHOLDER/20260101/eu-west-1/s3/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=00")
    return [("Host", "bucket.s3.eu-west-1.amazonaws.com"), ("Authorization", auth),
            ("X-Amz-Date", "20260101T000000Z"), ("X-Amz-Security-Token", "placeholder"),
            *extra.items()]


def test_resign_replaces_the_sdk_signature_and_adds_the_session_token() -> None:
    headers = _sdk_headers(**{"x-amz-content-sha256": UNSIGNED_PAYLOAD})
    creds = AwsCredentials("ASIAEXAMPLE", "secret", "session-token")
    scope = scope_for("bucket.s3.eu-west-1.amazonaws.com", headers, region=None, service=None)
    resign("PUT", "/key", headers, creds, scope, None, now=lambda: 1_440_938_160.0)
    names = [n.lower() for n, _ in headers]
    assert names.count("authorization") == names.count("x-amz-security-token") == 1
    values = dict((n.lower(), v) for n, v in headers)
    assert values["x-amz-security-token"] == "session-token"
    assert values["x-amz-date"] == DATE
    assert values["x-amz-content-sha256"] == UNSIGNED_PAYLOAD
    assert values["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20150830/eu-west-1/s3/aws4_request, SignedHeaders="
        "host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="
    )


def test_payload_hash_of_a_whole_body_and_refusals_for_what_cannot_be_resigned() -> None:
    creds = AwsCredentials("ASIAEXAMPLE", "secret", None)
    headers = [("Host", "dynamodb.us-east-1.amazonaws.com")]
    resign("POST", "/", headers, creds, Scope("us-east-1", "dynamodb"), b"{}", now=lambda: 0.0)
    assert "x-amz-content-sha256" not in {n.lower() for n, _ in headers}  # only S3 needs the field
    with pytest.raises(BadRequest):  # a streamed body to a service that needs the payload hash
        resign("POST", "/", [("Host", "h")], creds, Scope("us-east-1", "dynamodb"), None)
    chunked = [("Host", "h"), ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")]
    with pytest.raises(BadRequest):
        resign("PUT", "/k", chunked, creds, Scope("us-east-1", "s3"), None)
    declared = [("Host", "h"), ("x-amz-content-sha256", "a" * 64)]
    resign("PUT", "/k", declared, creds, Scope("us-east-1", "s3"), None)
    assert ("X-Amz-Content-Sha256", "a" * 64) in declared  # S3 checks the body against it


def test_scope_from_target_then_sdk_then_host() -> None:
    sdk = _sdk_headers()
    assert scope_for("x", sdk, region="us-west-2", service="execute-api") == Scope("us-west-2", "execute-api")
    assert scope_for("localhost", sdk, region=None, service=None) == Scope("eu-west-1", "s3")
    assert scope_for("sts.amazonaws.com", [], region=None, service=None) == Scope("us-east-1", "sts")
    assert scope_for("dynamodb.ap-south-1.amazonaws.com", [], region=None, service=None) == Scope(
        "ap-south-1", "dynamodb"
    )
    assert scope_for("my-bucket.s3.us-west-2.amazonaws.com", [], region=None, service=None) == Scope(
        "us-west-2", "s3"
    )
    with pytest.raises(BadRequest):
        scope_for("localhost", [], region=None, service=None)


def test_credentials_parse_and_repr_hides_the_secret() -> None:
    creds = parse_credentials('{"Version": 1, "AccessKeyId": "ASIAKEY", "SecretAccessKey": "s3cr3t",'
                                 ' "SessionToken": "tok", "Expiration": "2026-01-01T00:00:00Z"}')
    assert (creds.access_key_id, creds.secret_access_key, creds.session_token) == ("ASIAKEY", "s3cr3t", "tok")
    assert "s3cr3t" not in repr(creds) and "tok" not in repr(creds)
    for bad in ("not json", "{}", '{"AccessKeyId": "", "SecretAccessKey": "x"}', "[1]"):
        with pytest.raises(InvalidCredential):
            parse_credentials(bad)
