"""Java (Debian's JDK), Node and Python apps in a pod network namespace, configured only by what the
webhook injects, reach a governed host (the credential is injected) and an ungoverned host whose
certificate chains to a CA in the pod's system trust store, in transparent and in explicit mode.

The pod: a network namespace joined to the test's by a veth pair; `ip netns exec` bind-mounts
/etc/netns/<ns>/hosts and /etc/netns/<ns>/ssl over /etc, so the pod resolves the two hosts to the
test's address and has its own system trust store: Debian's, plus a "corporate" root CA the test
installs (as an image would with update-ca-certificates). Both upstreams' certificates chain to that
CA. The injected pod spec is applied literally: `sesame-init`'s args (the real init: pod CA, trust
bundle, Java trust store and, in transparent mode, the REDIRECT rules), the proxy's env and the app
container's env, with the volume paths rewritten to the test's directories. The control plane is
the proxy-facing double; the proxy runs as its UID, the apps as UID 1000.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.injector import review
from controlplane.injector_spec import CA_DIR, TOKEN_PATH, TRUST_DIR, InjectorSettings
from devkit.certs import DevCA
from devkit.upstream import ApiServer, server_context
from tests.proxy.conftest import API_KEY, route
from tests.proxy.cp_double import ControlPlaneDouble
from tests.proxy.procs import ProxyProcess, start_proxy_process
from tests.proxy.test_transparent_mode import pod_netns as pod_netns  # fixture

from .admission import container, patched, review_of
from .corpus import corpus_pod

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, netfilter)"),
    pytest.mark.skipif(not shutil.which("setpriv") or not shutil.which("openssl"), reason="setpriv, openssl"),
]

RUNTIMES = Path(__file__).with_name("runtimes")
APP_UID = 1000
GOVERNED, PUBLIC = "api.sesame.test", "public.example.test"
CLIENT_TIMEOUT = 60


@dataclass
class Pod:
    ns: str
    root: Path
    app_env: dict[str, dict[str, str]]  # container name → literal env
    proxy: ProxyProcess
    governed: ApiServer
    public: ApiServer
    cp: ControlPlaneDouble

    def urls(self) -> list[str]:
        return [
            f"https://{GOVERNED}:{self.governed.port}/v1/hello",
            f"https://{PUBLIC}:{self.public.port}/v1/hello",
        ]


def _run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60, **kwargs)


def _install_system_ca(etc: Path, host_ip: str, ca: DevCA) -> None:
    """/etc/netns/<ns>: hosts naming both upstreams, and a copy of /etc/ssl with the corporate CA."""
    etc.mkdir(parents=True)
    (etc / "hosts").write_text(f"127.0.0.1 localhost\n::1 localhost\n{host_ip} {GOVERNED} {PUBLIC}\n")
    shutil.copytree("/etc/ssl", etc / "ssl", symlinks=True)
    certs = etc / "ssl" / "certs"
    (certs / "corp-root.pem").write_bytes(ca.cert_pem)
    subject_hash = _run("openssl", "x509", "-noout", "-subject_hash", "-in", str(certs / "corp-root.pem"))
    (certs / f"{subject_hash.stdout.strip()}.0").symlink_to("corp-root.pem")
    bundle = certs / "ca-certificates.crt"
    bundle.write_bytes(bundle.read_bytes().rstrip(b"\n") + b"\n" + ca.cert_pem)


def _injected(mode: str, settings: InjectorSettings) -> dict:
    """One pod with a Java, a Node and a Python container, through the webhook."""
    pod = corpus_pod("java")
    pod["metadata"]["annotations"]["sesame.dev/mode"] = mode
    pod["spec"]["containers"] += [
        {"name": "node", "image": "node:22-slim"},
        {"name": "python", "image": "python:3.12-slim"},
    ]
    doc = review_of(pod, namespace="apps")
    response, outcome = review(doc, settings, namespace_opted_in=False)
    assert outcome.action == "injected", outcome.message
    return patched(doc, response)


def _second_address(host_ip: str) -> str:
    """Add .3 beside the test's .1 on the host end of the pod's veth (removed with the veth)."""
    line = _run("ip", "-o", "-4", "addr", "show", "to", host_ip).stdout.split()
    second = host_ip.rsplit(".", 1)[0] + ".3"
    _run("ip", "addr", "add", f"{second}/24", "dev", line[1])
    return second


def _shared_dir() -> Path:
    root = Path(tempfile.mkdtemp(prefix="sesame-runtimes-"))
    root.chmod(0o755)
    return root


def _init(ns: str, uid: int, args: list[str]) -> None:
    """`sesame-proxy init` with the injected args, as the injected UID, in the pod."""
    _run(
        "ip", "netns", "exec", ns, "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        sys.executable, "-m", "proxy.main", *args, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip


def _localise(value: str, root: Path) -> str:
    """The pod's volume paths → the test's directories (what the kubelet's mounts do)."""
    for path, local in ((CA_DIR, root / "ca"), (TRUST_DIR, root / "trust"), (TOKEN_PATH, root / "token")):
        value = value.replace(path, str(local))
    return value


def _literal_env(item: dict, root: Path) -> dict[str, str]:
    return {e["name"]: _localise(e["value"], root) for e in item.get("env", []) if "value" in e}


@pytest.fixture(params=["transparent", "explicit"])
async def pod(request, pod_netns) -> AsyncIterator[Pod]:
    mode = request.param
    ns, host_ip, _, _ = pod_netns
    async with contextlib.AsyncExitStack() as stack:
        etc = Path("/etc/netns") / ns
        stack.callback(shutil.rmtree, etc, ignore_errors=True)
        # The upstreams get their own address: the init container excludes the control plane's.
        upstream_ip = _second_address(host_ip)
        corp = DevCA("Corp Root CA (installed in the pod's system trust store)")
        _install_system_ca(etc, upstream_ip, corp)
        root = _shared_dir()
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        governed = await _https_api(stack, corp, GOVERNED, root, upstream_ip, API_KEY)
        public = await _https_api(stack, corp, PUBLIC, root, upstream_ip, "not-the-apps-key")
        cp = ControlPlaneDouble(host=host_ip)
        cp.script = {"aud-gov": [("ok", API_KEY)]}
        cp.routes = [route("gov", GOVERNED, governed.port, audience="aud-gov")]
        await cp.start()
        stack.push_async_callback(cp.stop)
        spec = _injected(mode, InjectorSettings(control_plane_url=cp.url))
        (root / "token").write_text("sa-token-1")
        init = container(spec, "sesame-init")
        uid = init["securityContext"]["runAsUser"]
        proxy_uid = container(spec, "sesame-proxy")["securityContext"]["runAsUser"]
        if uid != 0:  # explicit mode: the init container runs as the proxy's UID, no capabilities
            os.chown(root, uid, uid)
        _init(ns, uid, [_localise(a, root) for a in init["args"]])
        proxy_env = _literal_env(container(spec, "sesame-proxy"), root)
        proxy = await start_proxy_process(
            prefix=("ip", "netns", "exec", ns, "setpriv", f"--reuid={proxy_uid}", f"--regid={proxy_uid}",
                    "--clear-groups"),
            listen=proxy_env["SESAME_LISTEN"],
            admin=proxy_env["SESAME_ADMIN"].replace("0.0.0.0", "127.0.0.1"),
            env=proxy_env,
        )  # fmt: skip
        stack.push_async_callback(proxy.stop)
        await proxy.wait_for_log("routes loaded")
        apps = {name: _literal_env(container(spec, name), root) for name in ("node", "python")}
        apps["java"] = _literal_env(container(spec, "ledger"), root)
        yield Pod(ns, root, apps, proxy, governed, public, cp)


async def _https_api(
    stack: contextlib.AsyncExitStack, ca: DevCA, name: str, root: Path, ip: str, key: str
) -> ApiServer:
    cert = ca.issue([name], root / name)
    api = await ApiServer(key, ip, ssl_context=server_context(cert.cert_file, cert.key_file)).start()
    stack.push_async_callback(api.close)
    return api


async def _app(pod: Pod, env: dict[str, str], *argv: str) -> dict:
    """Run one client in the pod as the app's UID with exactly the injected env; its JSON line."""
    clean = {"PATH": os.environ["PATH"], "HOME": "/tmp", **env}
    as_app = ("setpriv", f"--reuid={APP_UID}", f"--regid={APP_UID}", "--clear-groups")
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", pod.ns, *as_app, *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean, cwd="/tmp",
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), CLIENT_TIMEOUT)
    assert proc.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


def _check(pod: Pod, results: dict, clients: tuple[str, ...]) -> None:
    """Governed: 200 with the credential injected. Ungoverned: the real host answered over verified TLS
    (its own 401: the app sent no key, and sesame added none)."""
    governed_url, public_url = pod.urls()
    for client in clients:
        assert results[f"{client} {governed_url}"] == 200, (client, results)
        assert results[f"{client} {public_url}"] == 401, (client, results)
    assert pod.governed.seen and all(s.authorized for s in pod.governed.seen)
    assert pod.public.seen and all("Authorization" not in s.headers for s in pod.public.seen)


async def test_java_from_debian(pod: Pod):
    java = shutil.which("java")
    if not java:
        pytest.skip("needs a JDK (Debian default-jdk-headless)")
    shutil.copy(RUNTIMES / "Client.java", pod.root / "Client.java")
    (pod.root / "Client.java").chmod(0o644)
    results = await _app(pod, pod.app_env["java"], java, str(pod.root / "Client.java"), *pod.urls())
    _check(pod, results, ("urlconnection", "httpclient"))


async def test_python(pod: Pod):
    results = await _app(
        pod, pod.app_env["python"], "/usr/bin/python3", "-I", str(RUNTIMES / "client.py"), *pod.urls()
    )
    _check(pod, results, ("urllib",))


def _node_version(node: str) -> str:
    return subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()


def _node_env_proxy_supported(version: str) -> bool:
    major, minor = (int(x) for x in re.match(r"v(\d+)\.(\d+)", version).groups())
    return major >= 24 or (major == 22 and minor >= 21)


async def test_node(pod: Pod):
    node = shutil.which("node")
    if not node:
        pytest.skip("needs node")
    env = dict(pod.app_env["node"])
    version = _node_version(node)
    clients: tuple[str, ...] = ("https", "fetch")
    if "HTTPS_PROXY" in env and not _node_env_proxy_supported(version):
        # Older Node ignores NODE_USE_ENV_PROXY; docs/proxy.md gives undici's EnvHttpProxyAgent line for
        # fetch, and transparent mode for the rest. Without undici at hand the explicit case is skipped.
        undici = _undici()
        if undici is None:
            pytest.skip(f"node {version.strip()} predates NODE_USE_ENV_PROXY and undici is not installable")
        env["NODE_OPTIONS"] = f"--require {undici}"
        env["CLIENTS"] = "fetch"
        clients = ("fetch",)
    results = await _app(pod, env, node, str(RUNTIMES / "client.js"), *pod.urls())
    _check(pod, results, clients)


def _undici() -> str | None:
    """A preload script running the documented line with undici from npm (cached beside the repo)."""
    cache = Path(__file__).resolve().parents[2] / ".node-deps"
    module = cache / "node_modules" / "undici"
    if not module.is_dir() and shutil.which("npm"):
        subprocess.run(
            ["npm", "install", "--prefix", str(cache), "--no-save", "--no-audit", "--no-fund", "undici@6"],
            capture_output=True,
            timeout=300,
            check=False,
        )
    if not module.is_dir():
        return None
    preload = cache / "env-proxy.js"
    preload.write_text(
        "const { setGlobalDispatcher, EnvHttpProxyAgent } = require(" + json.dumps(str(module)) + ");\n"
        "setGlobalDispatcher(new EnvHttpProxyAgent());\n"
    )
    for path in (cache, *cache.rglob("*")):
        path.chmod(path.stat().st_mode | 0o005 | (0o001 if path.is_dir() else 0))
    return str(preload)
