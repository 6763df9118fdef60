"""`make demo`: the whole path on embedded defaults, in a temporary directory, in well under 30 s.

Starts the control plane (SQLite), a local Kubernetes-style cluster issuer with a projected service
account token, a local HTTPS API that requires an API key, and the proxy (explicit mode); registers
cluster, workload, targets, providers and policies with `sesamectl apply -f` from the README's
walkthrough documents (examples/walkthrough/, given local addresses); runs curl through the proxy with no
key (200), shows one denied call (403), prints the audit trail, and stops everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from devkit.certs import DevCA
from devkit.controlplane_server import LOOPBACK_ENV, control_plane_process
from devkit.issuer import ClusterIssuer
from devkit.processes import stop_process

REPO = Path(__file__).resolve().parents[1]
WALKTHROUGH = REPO / "examples" / "walkthrough"
API_KEY = "sk-demo-" + os.urandom(6).hex()
NAMESPACE, SERVICE_ACCOUNT = "shop", "checkout"
STEP_TIMEOUT = 20.0


def say(text: str) -> None:
    bold, plain = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}== {text}{plain}", flush=True)


class Admin:
    """The control plane's admin API over stdlib HTTP, with the owner key."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.key}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"{method} {path} failed: {exc.code} {exc.read().decode()}") from exc
        result = json.loads(raw) if raw else None
        print(f"   {method} {path} -> {result.get('id', 'ok') if isinstance(result, dict) else 'ok'}")
        return result


@contextlib.contextmanager
def process(argv: list[str], ready: str, **kwargs: Any) -> Iterator[tuple[subprocess.Popen, dict]]:
    """Start a child whose stdout/stderr prints a JSON line containing `ready`; stop it afterwards."""
    proc = subprocess.Popen(argv, text=True, **kwargs)
    stream = proc.stdout or proc.stderr
    assert stream is not None
    try:
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            line = stream.readline()
            if not line:
                raise SystemExit(f"{argv[2]} exited early ({proc.wait()})")
            if ready in line:
                threading.Thread(target=stream.read, daemon=True).start()  # keep the pipe drained
                yield proc, json.loads(line)
                break
        else:
            raise SystemExit(f"{argv[2]} did not start in time")
    finally:
        stop_process(proc)


def curl(proxy: str, bundle: Path, url: str) -> str:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--proxy",
            proxy,
            "--cacert",
            str(bundle),
            "-w",
            "\n   HTTP %{http_code}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=20,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    return (out.stdout + out.stderr).strip()


def _env_secret(variable: str) -> dict[str, Any]:
    return {"secrets": {"value": {"fromEnv": variable}}}


def localize_walkthrough(out: Path, issuer: str, api_port: int) -> Path:
    """The walkthrough's documents with this machine's addresses: the local issuer (JWKS), the demo
    API on localhost (payments) and 127.0.0.1 (ledger), secrets from the demo's environment."""
    local: dict[tuple[str, str], dict[str, Any]] = {
        ("Cluster", "prod"): {"issuer": issuer, "verification": "jwks"},
        ("Target", "payments-api"): {"host": "localhost", "port": api_port},
        ("Target", "ledger-api"): {"host": "127.0.0.1", "port": api_port},
        ("CredentialProvider", "payments-api-key"): {
            "secrets": {"value": {"fromEnv": "DEMO_PAYMENTS_API_KEY"}}
        },
        ("CredentialProvider", "ledger-api-key"): {"secrets": {"value": {"fromEnv": "DEMO_LEDGER_API_KEY"}}},
    }
    out.mkdir()
    for source in sorted(WALKTHROUGH.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(source.read_text()) if d]
        for doc in docs:
            doc["spec"].update(local.get((doc["kind"], doc["metadata"]["name"]), {}))
        (out / source.name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return out


def sesamectl(env: dict[str, str], *args: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "controlplane.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )
    for line in (out.stdout + out.stderr).splitlines():
        print(f"   {line}")
    if out.returncode != 0:
        raise SystemExit(f"sesamectl {args[0]} failed ({out.returncode})")


def wait_ready(admin_url: str) -> None:
    for _ in range(200):
        try:
            with urllib.request.urlopen(admin_url + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)
    raise SystemExit("the proxy did not become ready")


@contextlib.contextmanager
def aws_peer(cert: Path, key: Path, ca: Path) -> Iterator[Any]:
    """moto in server mode with request authentication (devkit/moto_server.py), or None when the
    test extras (moto, the aws CLI) are not installed: the AWS step is then skipped."""
    if _aws_cli() is None:
        yield None
        return
    try:
        from devkit.moto_server import start_moto
    except ImportError:
        yield None
        return
    moto = start_moto(cert=cert, key=key, ca=ca)
    try:
        yield moto
    finally:
        moto.stop()


def _aws_cli() -> str | None:
    return shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")


def govern_aws(admin: Admin, workload_id: str, moto: Any, ca_file: Path) -> None:
    """An aws-sigv4 target for moto's endpoint, an aws-sts provider (AssumeRole), a policy."""
    from devkit.moto_server import ROLE_ARN

    target = admin(
        "POST",
        "/v1/targets",
        {"name": "aws", "host": "localhost", "port": moto.port, "injection": {"type": "aws-sigv4"}},
    )
    config = {
        "role_arn": ROLE_ARN,
        "mode": "assume-role",
        "sts_endpoint": moto.url,
        "ca_pem": ca_file.read_text(),
        "access_key_id": moto.access_key_id,
        "secret_access_key": moto.secret_access_key,
    }
    provider = admin("POST", "/v1/credential-providers", {"name": "aws", "type": "aws-sts", "config": config})
    admin(
        "POST",
        "/v1/policies",
        {
            "workload_id": workload_id,
            "target_id": target["id"],
            "provider_id": provider["id"],
            "effect": "allow",
            "max_ttl_seconds": 900,
        },
    )


def aws_cli(proxy: str, bundle: Path, endpoint: str) -> list[str]:
    """`aws s3 mb` then `aws s3 ls` as an unmodified app: placeholder keys, HTTPS_PROXY."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(bundle.parent),
        "AWS_ACCESS_KEY_ID": "SESAME-PLACEHOLDER-KEY-ID",
        "AWS_SECRET_ACCESS_KEY": "sesame-placeholder-the-proxy-signs-governed-requests",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CA_BUNDLE": str(bundle),
        "HTTPS_PROXY": proxy,
        "AWS_MAX_ATTEMPTS": "1",
    }
    lines = []
    for args in (["s3", "mb", "s3://sesame-demo"], ["s3", "ls"]):
        out = subprocess.run(
            [_aws_cli(), "--endpoint-url", endpoint, *args],  # type: ignore[list-item]
            capture_output=True, text=True, timeout=STEP_TIMEOUT, env=env, check=False,
        )
        lines.append(f"$ aws {' '.join(args)}  (exit {out.returncode})")
        lines += [line for line in (out.stdout + out.stderr).splitlines() if line.strip()][-5:]
    return lines


def main() -> int:
    started = time.monotonic()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="sesame-demo-") as tmp, ClusterIssuer.in_thread() as issuer:
        root = Path(tmp)
        say("1. A local HTTPS API that requires an API key")
        server = DevCA("Sesame demo CA").issue(["localhost", "127.0.0.1"], root / "api")
        ca_file = root / "demo-ca.pem"
        ca_file.write_bytes(server.cert_file.read_bytes().split(b"-----END CERTIFICATE-----\n", 1)[1])
        api_argv = [
            py,
            "-m",
            "devkit.upstream",
            "--api-key",
            API_KEY,
            "--cert",
            str(server.cert_file),
            "--key",
            str(server.key_file),
        ]
        with (
            process(api_argv, '"port"', stdout=subprocess.PIPE) as (_, api_info),
            control_plane_process(root / "cp.db", env=LOOPBACK_ENV) as cp,  # issuer on loopback
            aws_peer(server.cert_file, server.key_file, ca_file) as moto,
        ):
            api_port = api_info["port"]
            print(f"   https://localhost:{api_port}  (key {API_KEY[:10]}…, held only by the control plane)")
            say(f"2. Control plane on SQLite at {cp.url}; cluster issuer at {issuer.url}")
            admin = Admin(cp.url, cp.owner_key)
            say(
                f"3. sesamectl apply -f {WALKTHROUGH.relative_to(REPO)}/ "
                "(the README's walkthrough, local addresses)"
            )
            config = localize_walkthrough(root / "config", issuer.issuer, api_port)
            ctl_env = {
                "SESAME_URL": cp.url,
                "SESAME_API_KEY": cp.owner_key,
                "DEMO_PAYMENTS_API_KEY": API_KEY,
                "DEMO_LEDGER_API_KEY": "sk-l",
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            }
            sesamectl(ctl_env, "apply", "-f", str(config))
            print("   sesamectl diff -f ... (nothing left to change):")
            sesamectl(ctl_env, "diff", "-f", str(config))
            if moto is not None:
                workloads = admin("GET", "/v1/workloads")["data"]
                [workload] = [w for w in workloads if w["service_account"] == SERVICE_ACCOUNT]
                govern_aws(admin, workload["id"], moto, ca_file)
            say("4. The pod: projected SA token, pod CA + trust bundle, the proxy (explicit mode)")
            token = issuer.write_token(root / "token", namespace=NAMESPACE, service_account=SERVICE_ACCOUNT)
            subprocess.run(
                [
                    py,
                    "-m",
                    "proxy.main",
                    "init-ca",
                    "--ca-dir",
                    str(root / "ca"),
                    "--trust-dir",
                    str(root / "trust"),
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            bundle = root / "trust" / "ca-bundle.pem"
            bundle.write_bytes(bundle.read_bytes() + ca_file.read_bytes())  # demo API's CA
            proxy_argv = [
                py,
                "-m",
                "proxy.main",
                "run",
                "--control-plane",
                cp.url,
                "--token-file",
                str(token),
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--ca-dir",
                str(root / "ca"),
                "--upstream-ca",
                str(ca_file),
                "--pod-name",
                "checkout-demo-0",
            ]
            with process(proxy_argv, "proxy started", stderr=subprocess.PIPE) as (proxy, info):
                proxy_url, admin_url = f"http://{info['listen']}", f"http://{info['admin']}"
                wait_ready(admin_url)
                print(f"   proxy {proxy_url}, admin {admin_url}")
                say("5. curl through the proxy, with no API key")
                print("   " + curl(proxy_url, bundle, f"https://localhost:{api_port}/v1/charges"))
                say("6. The same app calls the ledger API, which a deny policy covers")
                print("   " + curl(proxy_url, bundle, f"https://127.0.0.1:{api_port}/v1/entries"))
                if moto is not None:
                    say("7. AWS: the app runs `aws s3 ls` with placeholder keys; the proxy signs (moto)")
                    for line in aws_cli(proxy_url, bundle, moto.url):
                        print("   " + line)
                with contextlib.suppress(urllib.error.URLError):
                    urllib.request.urlopen(
                        urllib.request.Request(admin_url + "/quitquitquit", method="POST"), timeout=5
                    ).read()
                proxy.wait(timeout=15)
            say("8. The audit trail")
            for e in reversed(admin("GET", "/v1/audit?limit=50")["events"]):
                print(
                    f"   {e['timestamp']}  {e['type']:<28} {e['outcome']:<8} "
                    f"{e.get('target_service') or '':<13} {e.get('reason') or ''}"
                )
    say(f"Done in {time.monotonic() - started:.1f} s; everything started has stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
