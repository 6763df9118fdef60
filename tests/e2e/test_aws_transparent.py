"""AWS in transparent mode: boto3 in a pod network namespace with no proxy settings and placeholder
keys; the init container's REDIRECT rules hand its TLS connections to the proxy (UID 1337), which
re-signs each request with the session credentials the real control plane got from moto's STS
(moto in server mode, request authentication on). Layout as tests/proxy/test_transparent_mode.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import aiohttp
import pytest

from controlplane.outbound import OutboundPolicy
from devkit.controlplane_server import running_control_plane
from devkit.issuer import ClusterIssuer
from devkit.moto_server import ACCOUNT, start_moto
from proxy.netfilter import RedirectSettings, apply_rules
from tests.e2e.conftest import NAMESPACE, SERVICE_ACCOUNT, Sesame, register_workload
from tests.e2e.test_aws import PLACEHOLDER_KEY, PLACEHOLDER_SECRET, govern_aws
from tests.netfilter_tools import require_netfilter
from tests.proxy.test_transparent_mode import (  # noqa: F401  (fixtures)
    APP_UID,
    PROXY_UID,
    _start_proxy,
    pod_hosts,
    pod_netns,
    shared_dir,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, netfilter)"),
    pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv"),
]

APP = """
import sys, boto3, botocore.config
endpoint, bundle = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=endpoint, region_name="us-east-1", verify=bundle,
          aws_access_key_id=sys.argv[3], aws_secret_access_key=sys.argv[4],
          config=botocore.config.Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))
s3 = boto3.client("s3", **kw)
s3.create_bucket(Bucket="transparent-bucket")
body = b"pod data " * 20000  # 180 KB: streamed, not held
s3.put_object(Bucket="transparent-bucket", Key="k", Body=body)
assert s3.get_object(Bucket="transparent-bucket", Key="k")["Body"].read() == body
print(boto3.client("sts", **kw).get_caller_identity()["Arn"])
print(boto3.client("dynamodb", **kw).list_tables()["TableNames"])
"""


async def test_boto3_in_a_transparent_pod_gets_its_requests_resigned(
    pod_netns,  # noqa: F811  (the fixture imported above)
    shared_dir,  # noqa: F811
    pki,
    tmp_path,
):
    require_netfilter("auto")
    ns, host_ip, _, _ = pod_netns
    cert = pki.dev_ca.issue(["aws.sesame.test", host_ip], tmp_path / "moto")
    moto = await asyncio.to_thread(
        start_moto, cert=cert.cert_file, key=cert.key_file, ca=pki.dev_ca_file, host=host_ip, name=host_ip
    )
    outbound = OutboundPolicy.parse(f"127.0.0.0/8,{host_ip}/32")
    try:
        async with (
            ClusterIssuer() as issuer,
            running_control_plane(tmp_path / "cp.db", host=host_ip, outbound=outbound) as cp,
            aiohttp.ClientSession() as http,
        ):
            token = issuer.write_token(
                shared_dir / "token", namespace=NAMESPACE, service_account=SERVICE_ACCOUNT
            )
            os.chown(token, PROXY_UID, PROXY_UID)
            sesame = Sesame(cp.url, cp.owner_key, issuer, Path(token), http)
            await register_workload(sesame)
            await govern_aws(sesame, moto, pki, host="aws.sesame.test")
            apply_rules(RedirectSettings(proxy_port=15001, proxy_uid=PROXY_UID), netns=ns)
            pod_hosts(ns, (host_ip, "aws.sesame.test"))
            proxy = await _start_proxy(ns, shared_dir, cp)  # the sidecar: UID 1337, port 15001
            try:
                await proxy.wait_for_log("routes loaded")
                app = await asyncio.create_subprocess_exec(
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "setpriv",
                    f"--reuid={APP_UID}",
                    f"--regid={APP_UID}",
                    "--clear-groups",
                    str(Path(os.sys.executable)),
                    "-c",
                    APP,
                    f"https://aws.sesame.test:{moto.port}",
                    str(shared_dir / "app-bundle.pem"),
                    PLACEHOLDER_KEY,
                    PLACEHOLDER_SECRET,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env={"PATH": os.environ["PATH"], "HOME": str(shared_dir)},  # no proxy variable
                )
                out, err = await asyncio.wait_for(app.communicate(), 120)
                events = (await sesame.api("GET", "/v1/audit?limit=50"))["events"]
            finally:
                await proxy.stop()
    finally:
        moto.stop()
    assert app.returncode == 0, err.decode()[-3000:]
    arn, tables = out.decode().splitlines()
    assert arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/sesame-workload/{NAMESPACE}.{SERVICE_ACCOUNT}"
    assert tables == "[]"
    assert any(e["type"] == "token.issued" and e["target_service"] == "aws" for e in events)
