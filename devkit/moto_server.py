"""A real AWS peer for tests and the demo: moto in server mode with request authentication on.

moto checks every request's SigV4 signature against the keys it issued (a wrong signature is
`SignatureDoesNotMatch`, an unknown key or missing session token `InvalidClientTokenId`) and the
caller's IAM policies. The first `_BOOTSTRAP_ACTIONS` requests go unauthenticated
(`INITIAL_NO_AUTH_ACTION_COUNT`): they create Sesame's base IAM user, its key and the role
workloads assume; everything after that must be signed.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ACCOUNT", "ROLE_ARN", "MotoServer", "start_moto"]

ACCOUNT = "123456789012"
ROLE_NAME = "sesame-workload"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE_NAME}"
_BOOTSTRAP_ACTIONS = 4
_ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/sesame"},
             "Action": ["sts:AssumeRole", "sts:TagSession"]}
        ],
    }
)


@dataclass
class MotoServer:
    process: subprocess.Popen
    url: str
    port: int
    access_key_id: str  # Sesame's base credentials (assume-role mode): never given to an app
    secret_access_key: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bootstrap(url: str, verify: str | bool) -> tuple[str, str]:
    import boto3

    kw = {"endpoint_url": url, "region_name": "us-east-1", "verify": verify}
    iam = boto3.client("iam", aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap", **kw)
    iam.create_user(UserName="sesame")
    iam.put_user_policy(UserName="sesame", PolicyName="all", PolicyDocument=_ALLOW_ALL)
    key = iam.create_access_key(UserName="sesame")["AccessKey"]
    iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=_TRUST)  # the last unsigned action
    signed = boto3.client(
        "iam", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], **kw
    )
    signed.put_role_policy(RoleName=ROLE_NAME, PolicyName="all", PolicyDocument=_ALLOW_ALL)
    return key["AccessKeyId"], key["SecretAccessKey"]


def start_moto(*, cert: Path | None = None, key: Path | None = None, ca: Path | None = None,
               host: str = "127.0.0.1", name: str = "localhost", timeout: float = 20.0) -> MotoServer:
    """Start `moto.server` on `host` (HTTPS when `cert`/`key` are given, `ca` verifies it), reached
    as `name`, and bootstrap it. Buckets are always path-style (a custom host is no bucket name)."""
    port = _free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(_BOOTSTRAP_ACTIONS))
    env["S3_IGNORE_SUBDOMAIN_BUCKETNAME"] = "1"
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HTTPS_PROXY"):
        env.pop(var, None)
    args = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
    if cert is not None and key is not None:
        args += ["-c", str(cert), "-k", str(key)]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)
    scheme = "https" if cert is not None else "http"
    url = f"{scheme}://{name}:{port}"
    try:
        key_id, secret = _bootstrap(url, str(ca) if ca is not None else True)
    except BaseException:
        process.kill()
        process.wait(5)
        raise
    return MotoServer(process, url, port, key_id, secret)


async def start_moto_async(**kwargs: object) -> MotoServer:
    return await asyncio.to_thread(start_moto, **kwargs)  # type: ignore[arg-type]
