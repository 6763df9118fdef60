"""AWS through Sesame with real peers: moto in server mode with request authentication on (a wrong
signature is `SignatureDoesNotMatch`, a missing session token `InvalidClientTokenId`), unmodified
boto3 and the `aws` CLI on the app side with placeholder keys, the real control plane issuing
session credentials from moto's STS (`aws-sts`, assume-role mode: AssumeRole signed by Sesame's
signer), and the proxy re-signing every request (proxy/sigv4.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest

from devkit.moto_server import ACCOUNT, ROLE_ARN, MotoServer, start_moto
from proxy.app import Proxy
from tests.e2e.conftest import NAMESPACE, SERVICE_ACCOUNT, Sesame
from tests.e2e.test_proxy_with_control_plane import proxy_url, start
from tests.proxy.conftest import Pki

PLACEHOLDER_KEY = "SESAME-PLACEHOLDER-ACCESS-KEY"  # what the webhook gives governed containers
PLACEHOLDER_SECRET = "sesame-placeholder-the-proxy-signs-each-request"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def moto(pki: Pki) -> Iterator[MotoServer]:
    server = start_moto(cert=pki.server_cert, key=pki.server_key, ca=pki.dev_ca_file)
    yield server
    server.stop()


async def govern_aws(
    sesame: Sesame, moto: MotoServer, pki: Pki, *, host: str = "localhost", **config: Any
) -> dict[str, Any]:
    """An `aws-sts` provider (assume-role against moto's STS), moto's port on `host` as an aws-sigv4
    target."""
    target = await sesame.api(
        "POST",
        "/v1/targets",
        {"name": "aws", "host": host, "port": moto.port, "injection": {"type": "aws-sigv4"}},
        201,
    )
    provider_config = {
        "role_arn": ROLE_ARN,
        "mode": "assume-role",
        "sts_endpoint": moto.url,
        "ca_pem": pki.dev_ca_file.read_text(),
        "access_key_id": moto.access_key_id,
        "secret_access_key": moto.secret_access_key,
        **config,
    }
    provider = await sesame.api(
        "POST", "/v1/credential-providers", {"name": "aws", "type": "aws-sts", "config": provider_config}, 201
    )
    await sesame.api(
        "POST",
        "/v1/policies",
        {"workload_id": sesame.workload_id, "target_id": target["id"], "provider_id": provider["id"],
         "effect": "allow", "max_ttl_seconds": 600},
        201,
    )
    sesame.aws_port = moto.port  # type: ignore[attr-defined]
    return provider


def app_client(service: str, moto: MotoServer, pki: Pki, proxy: Proxy | None) -> Any:
    """An unmodified boto3 client as a governed app builds it: placeholder keys, HTTPS_PROXY."""
    proxies = {"https": proxy_url(proxy)} if proxy is not None else None
    return boto3.client(
        service,
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id=PLACEHOLDER_KEY,
        aws_secret_access_key=PLACEHOLDER_SECRET,
        verify=str(pki.client_bundle),
        config=botocore.config.Config(proxies=proxies, retries={"max_attempts": 1},
                                      connect_timeout=10, read_timeout=60),
    )


def _app_calls(moto: MotoServer, pki: Pki, proxy: Proxy, tmp: Path) -> dict[str, Any]:
    """What the app does, synchronously (boto3), through the proxy."""
    sts = app_client("sts", moto, pki, proxy)
    s3 = app_client("s3", moto, pki, proxy)
    ddb = app_client("dynamodb", moto, pki, proxy)
    out: dict[str, Any] = {"arn": sts.get_caller_identity()["Arn"]}
    s3.create_bucket(Bucket="sesame-e2e")
    s3.put_object(Bucket="sesame-e2e", Key="small.txt", Body=b"hello from a governed pod")
    big = tmp / "big.bin"
    with big.open("wb") as f:  # 50 MB streamed from a file: never held whole by the proxy
        block = hashlib.sha256(b"seed").digest() * (MB // 32)
        for _ in range(50):
            f.write(block)
    with big.open("rb") as f:
        s3.put_object(Bucket="sesame-e2e", Key="big.bin", Body=f)
    out["small"] = s3.get_object(Bucket="sesame-e2e", Key="small.txt")["Body"].read()
    body = s3.get_object(Bucket="sesame-e2e", Key="big.bin")["Body"]
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(MB), b""):
        digest.update(chunk)
    out["big_sha256"], out["big_expected"] = digest.hexdigest(), hashlib.sha256(big.read_bytes()).hexdigest()
    out["keys"] = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="sesame-e2e")["Contents"])
    ddb.create_table(
        TableName="orders",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName="orders", Item={"id": {"S": "o-1"}, "total": {"N": "42"}})
    out["item"] = ddb.get_item(TableName="orders", Key={"id": {"S": "o-1"}})["Item"]
    return out


def _secrets_absent(sesame_db: Path, texts: list[str], secrets: list[str]) -> None:
    raw = sesame_db.read_bytes()
    for wal in sesame_db.parent.glob(sesame_db.name + "-wal"):
        raw += wal.read_bytes()
    for secret in secrets:
        assert secret.encode() not in raw
        for text in texts:
            assert secret not in text


async def test_boto3_through_the_proxy_with_placeholder_keys(sesame, pki, moto, tmp_path, caplog):
    provider = await govern_aws(sesame, moto, pki)
    assert "secret_access_key" not in json.dumps(provider["config"])
    proxy = await start(sesame, pki)
    try:
        out = await asyncio.to_thread(_app_calls, moto, pki, proxy, tmp_path)
    finally:
        await proxy.close()
    assert out["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/sesame-workload/{NAMESPACE}.{SERVICE_ACCOUNT}"
    assert out["small"] == b"hello from a governed pod"
    assert out["big_sha256"] == out["big_expected"]
    assert out["keys"] == ["big.bin", "small.txt"]
    assert out["item"]["total"] == {"N": "42"}
    # The same placeholder keys straight to moto (no proxy) are refused: moto authenticates.
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        await asyncio.to_thread(app_client("sts", moto, pki, None).get_caller_identity)
    assert refused.value.response["Error"]["Code"] == "InvalidClientTokenId"
    events = (await sesame.api("GET", "/v1/audit?limit=100"))["events"]
    issued = [e for e in events if e["type"] == "token.issued" and e["target_service"] == "aws"]
    assert issued and issued[0]["extra"]["provider_id"] == provider["id"]
    # The session the proxy signed with (the provider's cached one, asked for again the way the
    # proxy asks) and Sesame's base secret: in no audit row, log line or database page.
    session = await issued_session(sesame)
    assert session["AccessKeyId"].startswith("ASIA")
    _secrets_absent(
        Path(sesame.token_file).parent / "cp.db",
        [json.dumps(events), caplog.text],
        [moto.secret_access_key, session["SecretAccessKey"], session["SessionToken"]],
    )


async def issued_session(sesame: Sesame) -> dict[str, str]:
    body = {"subject_token": sesame.token_file.read_text(),
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "audience": "https://localhost:" + str(sesame.aws_port)}
    async with sesame.http.post(sesame.url + "/v1/token-exchange", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return json.loads((await resp.json())["access_token"])


async def test_aws_cli_through_the_proxy(sesame, pki, moto, tmp_path):
    """The `aws` CLI as the app: `aws s3 ls`, `aws s3 cp` up and down, `aws sts get-caller-identity`."""
    aws = shutil.which("aws", path=str(Path(os.sys.executable).parent)) or shutil.which("aws")
    if aws is None:
        pytest.skip("the aws CLI (pip awscli) is not installed")
    await govern_aws(sesame, moto, pki)
    proxy = await start(sesame, pki)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": PLACEHOLDER_KEY,
        "AWS_SECRET_ACCESS_KEY": PLACEHOLDER_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CA_BUNDLE": str(pki.client_bundle),
        "HTTPS_PROXY": proxy_url(proxy),
        "AWS_MAX_ATTEMPTS": "1",
    }
    payload = tmp_path / "report.csv"
    payload.write_bytes(b"id,total\n1,42\n" * 1000)

    async def run(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            aws, "--endpoint-url", moto.url, *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, (args, err.decode()[-2000:])
        return out.decode()

    try:
        await run("s3", "mb", "s3://cli-bucket")
        await run("s3", "cp", str(payload), "s3://cli-bucket/report.csv")
        listing = await run("s3", "ls", "s3://cli-bucket")
        await run("s3", "cp", "s3://cli-bucket/report.csv", str(tmp_path / "back.csv"))
        who = json.loads(await run("sts", "get-caller-identity"))
    finally:
        await proxy.close()
    assert "report.csv" in listing
    assert (tmp_path / "back.csv").read_bytes() == payload.read_bytes()
    assert who["Arn"].endswith(f"assumed-role/sesame-workload/{NAMESPACE}.{SERVICE_ACCOUNT}")
