"""Benchmark: Sesame's proxy next to nginx as a reverse proxy adding the same header (reported, not asserted).

Same run, loopback: wrk against (a) the upstream directly, (b) nginx reverse proxy adding
`Authorization`, (c) Sesame in explicit mode injecting a governed bearer credential. Sesame and the
reference nginx are pinned to one core, wrk and the upstream nginx to the other. Reports req/s and
p50/p99 at c1 and c50, Sesame's RSS and CPU-seconds per request, then intercepted HTTPS: added p50 on
a kept-alive connection and proxy CPU per new intercepted TLS connection.
The upstream answers 401 unless the credential is present, and every run reports its non-2xx count,
so a fast proxy that forgets the credential cannot look good.
Goals (issue 8): req/s at c50 >= 0.60 x nginx; CPU per request <= 1.6 x nginx's; added p50 at c1 <=
0.10 ms over nginx's; p99 at c50 <= 1.5 x nginx's; RSS after load <= 30 MB.

HTTP/2 (issue 13, `h2load` from Debian's nghttp2-client; skipped when it is missing): h2c with prior
knowledge against (a) an nginx h2c upstream directly, (b) nginx as an h2c front with `grpc_pass` to
it and `grpc_set_header Authorization`, (c) Sesame in explicit mode (h2c to the proxy port, each
stream's `:authority` naming the governed plaintext route, which Sesame speaks h2c to). Unary
requests/s with many streams on few connections (4 connections x 100 streams), p50 at one stream,
and Sesame's RSS with 1,000 concurrent streams (10 x 100). Goals: requests/s >= 0.5 x nginx's; added
p50 at one stream <= 0.2 ms over nginx's; RSS with 1,000 streams <= 60 MB.

    .venv/bin/python -m bench.proxy_throughput [--seconds 5] [--tls-requests 500] [--tls-connections 100]
        [--baseline DIR]   # also measure another proxy package in the same run (before/after):
                           # mkdir /tmp/before && git archive REV proxy | tar -x -C /tmp/before

Needs `wrk` and `nginx` (Debian: apt-get install -y wrk nginx nghttp2-client).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from devkit.certs import DevCA
from devkit.controlplane_server import LOOPBACK_ENV, control_plane_process
from devkit.demo import Admin, process, wait_ready
from devkit.issuer import ClusterIssuer
from devkit.registry_bodies import service_account_workload

KEY = "bench-key"
REPO = Path(__file__).resolve().parent.parent
NGINX_CONF = """
worker_processes 1; daemon off; user root; pid {dir}/nginx.pid; error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {dir}/b; proxy_temp_path {dir}/p; fastcgi_temp_path {dir}/f;
  uwsgi_temp_path {dir}/u; scgi_temp_path {dir}/s; keepalive_requests 1000000;
  {body}
}}
"""
UPSTREAM = """
  map $http_authorization $denied {{ "Bearer {token}" 0; default 1; }}
  server {{ listen 127.0.0.1:{http}; location / {{ if ($denied) {{ return 401; }} return 200 "ok\\n"; }} }}
  server {{ listen 127.0.0.1:{https} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
           location / {{ if ($denied) {{ return 401; }} return 200 "ok\\n"; }} }}
"""
UPSTREAM_H2 = """
  server {{ listen 127.0.0.1:{h2} http2; http2_max_concurrent_streams 1000;
           location / {{ if ($denied) {{ return 401; }} return 200 "ok\\n"; }} }}
"""
REVERSE_H2 = """
  upstream h2backend {{ server 127.0.0.1:{h2}; keepalive 64; }}
  server {{ listen 127.0.0.1:{rp2} http2; http2_max_concurrent_streams 1000;
           location / {{ grpc_pass grpc://h2backend; grpc_set_header Authorization "Bearer {key}"; }} }}
"""
REVERSE = """
  upstream backend {{ server 127.0.0.1:{http}; keepalive 64; }}
  server {{ listen 127.0.0.1:{rp}; location / {{ proxy_pass http://backend; proxy_http_version 1.1;
           proxy_set_header Connection ""; proxy_set_header Authorization "Bearer {key}"; }} }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx(stack: ExitStack, root: Path, name: str, body: str, core: int) -> int:
    d = root / name
    d.mkdir()
    (d / "nginx.conf").write_text(NGINX_CONF.format(dir=d, body=body))
    proc = subprocess.Popen(["taskset", "-c", str(core), "nginx", "-c", str(d / "nginx.conf"), "-p", str(d)])
    stack.callback(lambda: (proc.terminate(), proc.wait(10)))
    time.sleep(0.3)
    return proc.pid


def _us(value: str) -> float:
    num, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(num) * {"us": 1, "ms": 1000, "s": 1e6}[unit]


def wrk(
    url: str, conns: int, seconds: int, absolute: str | None = None, credential: bool = False
) -> dict[str, float]:
    """wrk's figures; `credential`: send the key ourselves (the direct run, which has no proxy)."""
    argv = ["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        if absolute:  # explicit proxy: absolute-form request target
            host = absolute.split("/")[2]
            script.write(f'wrk.path = "{absolute}"\nwrk.headers["Host"] = "{host}"\n')
        if credential:
            script.write(f'wrk.headers["Authorization"] = "Bearer {KEY}"\n')
    out = subprocess.run(
        [*argv, "-s", script.name, url], capture_output=True, text=True, timeout=seconds + 30
    )
    os.unlink(script.name)
    text = out.stdout
    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),  # type: ignore[union-attr]
        "p50_us": _us(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)),  # type: ignore[union-attr]
        "p99_us": _us(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)),  # type: ignore[union-attr]
        "requests": requests,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": len(re.findall(r"Socket errors", text)),
    }


def h2load(url: str, conns: int, streams: int, seconds: int, *headers: str) -> dict[str, float]:
    """h2load's figures (h2c with prior knowledge); p50 from its per-request log."""
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        argv = ["taskset", "-c", "0", "h2load", "-c", str(conns), "-m", str(streams), "-D", str(seconds),
                "--warm-up-time=1", "--log-file", log.name]
        for header in headers:
            argv += ["-H", header]
        out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 60)
        durations = sorted(int(line.split()[2]) for line in log.read().splitlines() if line.strip())
    text = out.stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if done is None or codes is None:
        raise RuntimeError(f"h2load failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    requests = int(done.group(1))
    return {
        "rps": requests / seconds,
        "p50_us": float(durations[len(durations) // 2]) if durations else 0.0,
        "requests": requests,
        "non_2xx": sum(int(codes.group(i)) for i in (2, 3, 4)) + requests - int(done.group(2)),
    }


def measure_h2(pid: int | None, url: str, seconds: int, *headers: str) -> dict[str, dict]:
    """One stream (p50), 4 connections x 100 streams (req/s, CPU), 10 x 100 streams (RSS)."""
    out: dict[str, dict] = {"one": h2load(url, 1, 1, seconds, *headers)}
    before = cpu_seconds(pid) if pid else 0.0
    many = h2load(url, 4, 100, seconds, *headers)
    if pid:
        many["cpu_ms_per_req"] = (cpu_seconds(pid) - before) / max(many["requests"], 1) * 1000
    out["many"] = many
    if pid:
        out["thousand"] = h2load(url, 10, 100, max(2, seconds // 2), *headers)
        out["thousand"]["rss_mb"] = status_kib(pid, "VmRSS") / 1024
        out["thousand"]["peak_mb"] = status_kib(pid, "VmHWM") / 1024
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def tls_via_proxy(proxy: tuple[str, int], host: str, port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(proxy, timeout=10)
    raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    return ctx.wrap_socket(raw, server_hostname=host)


def get(sock: ssl.SSLSocket, host: str, credential: bool = False) -> None:
    auth = f"Authorization: Bearer {KEY}\r\n" if credential else ""
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode())
    data = b""
    while not data.endswith(b"ok\n"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk


def timed(sock: ssl.SSLSocket, host: str, n: int, credential: bool = False) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        get(sock, host, credential)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def start_proxy(
    stack: ExitStack, argv_tail: list[str], src: Path, profile: str | None
) -> tuple[int, str, str]:
    """A proxy process running the code in `src` → (pid, listen, admin)."""
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    argv = ["taskset", "-c", "1", sys.executable, *prof, "-m", "proxy.main", "run", *argv_tail]
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{REPO}"}
    proc, info = stack.enter_context(process(argv, "proxy started", stderr=subprocess.PIPE, cwd=src, env=env))
    wait_ready(f"http://{info['admin']}")
    return proc.pid, info["listen"], info["admin"]


def measure_proxy(
    pid: int, listen: str, target: str, tls: tuple[ssl.SSLContext, int], args: argparse.Namespace
) -> dict[str, dict]:
    """wrk c1/c50 through the proxy, its CPU per request and RSS; intercepted HTTPS latency and CPU."""
    proxy_url = f"http://{listen}"
    # warm up: one exchange, pooled connections
    urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy_url})).open(
        target, timeout=10
    ).read()
    out: dict[str, dict] = {}
    for conns in (1, 50):
        before = cpu_seconds(pid)
        r = wrk(proxy_url, conns, args.seconds, absolute=target)
        r["cpu_ms_per_req"] = (cpu_seconds(pid) - before) / max(r["requests"], 1) * 1000
        out[f"c{conns}"] = r
    client, https_port = tls
    port = int(listen.rsplit(":", 1)[1])
    via_sock = tls_via_proxy(("127.0.0.1", port), "localhost", https_port, client)
    timed(via_sock, "localhost", 50)
    out["tls"] = {"keepalive_p50_us": timed(via_sock, "localhost", args.tls_requests)}
    via_sock.close()
    before = cpu_seconds(pid)
    for _ in range(args.tls_connections):
        sock = tls_via_proxy(("127.0.0.1", port), "localhost", https_port, client)
        get(sock, "localhost")
        sock.close()
    out["tls"]["new_conn_cpu_ms"] = (cpu_seconds(pid) - before) / args.tls_connections * 1000
    out["rss"] = {"rss_mb": status_kib(pid, "VmRSS") / 1024, "peak_mb": status_kib(pid, "VmHWM") / 1024}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy_throughput")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--tls-requests", type=int, default=500)
    parser.add_argument("--tls-connections", type=int, default=100)
    parser.add_argument("--profile", help="write a cProfile of the proxy to this file")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also measure the proxy package found in this directory (e.g. `git archive REV proxy | tar -x`)",
    )
    args = parser.parse_args()
    if not (shutil.which("wrk") and shutil.which("nginx") and shutil.which("taskset")):
        print("needs wrk, nginx and taskset (apt-get install -y wrk nginx)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {0})
    results: dict[str, dict] = {}
    proxies: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="sesame-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        ca = DevCA("bench CA")
        cert = ca.issue(["localhost"], root / "tls")
        ca_file = ca.write_ca(root / "ca.pem")
        http_port, https_port, rp_port = free_port(), free_port(), free_port()
        h2_port, rp2_port = free_port(), free_port()
        with_h2 = shutil.which("h2load") is not None
        nginx(
            stack,
            root,
            "upstream",
            UPSTREAM.format(
                http=http_port, https=https_port, cert=cert.cert_file, key=cert.key_file, token=KEY
            ) + (UPSTREAM_H2.format(h2=h2_port) if with_h2 else ""),
            core=0,
        )
        reverse_pid = nginx(
            stack, root, "reverse", REVERSE.format(http=http_port, rp=rp_port, key=KEY)
            + (REVERSE_H2.format(h2=h2_port, rp2=rp2_port, key=KEY) if with_h2 else ""), core=1
        )

        issuer = stack.enter_context(ClusterIssuer.in_thread())
        cp = stack.enter_context(control_plane_process(root / "cp.db", env=LOOPBACK_ENV))  # loopback issuer
        admin = Admin(cp.url, cp.owner_key)
        admin("POST", "/v1/clusters", {"name": "bench", "issuer": issuer.issuer})
        wl = admin(
            "POST",
            "/v1/workloads",
            service_account_workload("bench", namespace="bench", service_account="bench", cluster="bench"),
        )
        for name, port, scheme in (("plain", http_port, "http"), ("tls", https_port, "https"),
                                   ("h2c", h2_port, "http")):
            host = "127.0.0.1" if scheme == "http" else "localhost"
            tls = "none" if scheme == "http" else "intercept"
            tg = admin(
                "POST",
                "/v1/targets",
                {"name": name, "host": host, "port": port, "scheme": scheme, "tls": tls},
            )
            pr = admin(
                "POST", "/v1/credential-providers", {"name": name, "type": "static", "config": {"value": KEY}}
            )
            admin(
                "POST",
                "/v1/policies",
                {
                    "workload_id": wl["id"],
                    "target_id": tg["id"],
                    "provider_id": pr["id"],
                    "effect": "allow",
                    "max_ttl_seconds": 3600,
                },
            )
        token = issuer.write_token(root / "token", namespace="bench", service_account="bench", ttl=3600)
        target = f"http://127.0.0.1:{http_port}/"
        for conns in (1, 50):
            results[f"direct c{conns}"] = wrk(target, conns, args.seconds, credential=True)
            workers = children(reverse_pid) or [reverse_pid]
            before = sum(cpu_seconds(w) for w in workers)
            r = wrk(f"http://127.0.0.1:{rp_port}/", conns, args.seconds)
            r["cpu_ms_per_req"] = (
                (sum(cpu_seconds(w) for w in workers) - before) / max(r["requests"], 1) * 1000
            )
            results[f"nginx c{conns}"] = r
        client = ssl.create_default_context(cafile=str(ca_file))
        direct_sock = client.wrap_socket(
            socket.create_connection(("127.0.0.1", https_port)), server_hostname="localhost"
        )
        timed(direct_sock, "localhost", 50, credential=True)
        tls_direct = timed(direct_sock, "localhost", args.tls_requests, credential=True)
        direct_sock.close()
        h2_results: dict[str, dict[str, dict]] = {}
        if with_h2:
            h2_results["direct"] = measure_h2(None, f"http://127.0.0.1:{h2_port}/", args.seconds,
                                              f"authorization: Bearer {KEY}")
            h2_results["nginx"] = measure_h2(None, f"http://127.0.0.1:{rp2_port}/", args.seconds)
        sources = {"sesame": REPO}
        if args.baseline:
            sources["baseline"] = args.baseline.resolve()
        for name, src in sources.items():
            flags = f"--control-plane {cp.url} --token-file {token} --listen 127.0.0.1:0 --admin 127.0.0.1:0"
            flags += f" --ca-dir {root / 'podca'} --upstream-ca {ca_file}"
            profile = args.profile if name == "sesame" else None
            pid, listen, _ = start_proxy(stack, flags.split(), src, profile)
            client.load_verify_locations(cafile=str(root / "podca" / "sesame-ca-cert.pem"))
            proxies[name] = measure_proxy(pid, listen, target, (client, https_port), args)
            if with_h2 and name == "sesame":
                h2_results[name] = measure_h2(pid, f"http://{listen}/", args.seconds,
                                              f":authority: 127.0.0.1:{h2_port}")

    print(f"\n{'run':<16}{'req/s':>10}{'p50 µs':>9}{'p99 µs':>9}{'CPU ms/req':>12}{'non-2xx':>9}")
    rows = dict(results)
    for name, m in proxies.items():
        rows[f"{name} c1"], rows[f"{name} c50"] = m["c1"], m["c50"]
    for name, r in rows.items():
        cpu = f"{r['cpu_ms_per_req']:.3f}" if "cpu_ms_per_req" in r else ""
        print(f"{name:<16}{r['rps']:>10.0f}{r['p50_us']:>9.0f}{r['p99_us']:>9.0f}{cpu:>12}{r['non_2xx']:>9}")
    nginx_added_c1 = results["nginx c1"]["p50_us"] - results["direct c1"]["p50_us"]
    summary: dict[str, object] = {
        "nginx_added_p50_ms_c1": round(nginx_added_c1 / 1000, 3),
        "nginx_cpu_ms_per_req_c50": round(results["nginx c50"]["cpu_ms_per_req"], 3),
    }
    for name, m in proxies.items():
        summary[name] = {
            "vs_nginx_rps_c50": round(m["c50"]["rps"] / results["nginx c50"]["rps"], 3),
            "vs_direct_rps_c50": round(m["c50"]["rps"] / results["direct c50"]["rps"], 3),
            "added_p50_ms_c1": round((m["c1"]["p50_us"] - results["direct c1"]["p50_us"]) / 1000, 3),
            "added_p50_over_nginx_ms_c1": round(
                (m["c1"]["p50_us"] - results["nginx c1"]["p50_us"]) / 1000, 3
            ),
            "p99_vs_nginx_c50": round(m["c50"]["p99_us"] / results["nginx c50"]["p99_us"], 2),
            "non_2xx": m["c1"]["non_2xx"] + m["c50"]["non_2xx"],
            "cpu_ms_per_req_c50": round(m["c50"]["cpu_ms_per_req"], 3),  # ≈ vCPU at 1000 req/s
            "cpu_vs_nginx_c50": round(m["c50"]["cpu_ms_per_req"] / results["nginx c50"]["cpu_ms_per_req"], 2),
            "rss_mb": round(m["rss"]["rss_mb"], 1),
            "peak_rss_mb": round(m["rss"]["peak_mb"], 1),
            "https_keepalive_added_p50_ms": round((m["tls"]["keepalive_p50_us"] - tls_direct) / 1000, 3),
            "new_intercepted_tls_cpu_ms": round(m["tls"]["new_conn_cpu_ms"], 2),
        }
    if h2_results:
        print(f"\n{'HTTP/2 (h2load)':<22}{'req/s':>10}{'p50 µs':>9}{'CPU ms/req':>12}{'non-2xx':>9}")
        for name, m in h2_results.items():
            for load, r in m.items():
                cpu = f"{r['cpu_ms_per_req']:.3f}" if "cpu_ms_per_req" in r else ""
                label = name + " " + {"one": "1 stream", "many": "4x100", "thousand": "10x100"}[load]
                print(f"{label:<22}{r['rps']:>10.0f}{r['p50_us']:>9.0f}{cpu:>12}{r['non_2xx']:>9}")
        h2 = h2_results.get("sesame")
        if h2 is not None:
            summary["http2"] = {
                "vs_nginx_rps_4x100": round(h2["many"]["rps"] / h2_results["nginx"]["many"]["rps"], 3),
                "added_p50_over_nginx_ms_one_stream": round(
                    (h2["one"]["p50_us"] - h2_results["nginx"]["one"]["p50_us"]) / 1000, 3
                ),
                "nginx_added_p50_ms_one_stream": round(
                    (h2_results["nginx"]["one"]["p50_us"] - h2_results["direct"]["one"]["p50_us"]) / 1000, 3
                ),
                "cpu_ms_per_req_4x100": round(h2["many"]["cpu_ms_per_req"], 3),
                "rss_mb_1000_streams": round(h2["thousand"]["rss_mb"], 1),
                "peak_rss_mb": round(h2["thousand"]["peak_mb"], 1),
                "non_2xx": sum(r["non_2xx"] for r in h2.values()),
            }
    print("\n" + json.dumps(summary, indent=2))
    print(
        "goals: vs_nginx_rps_c50 >= 0.60; cpu_vs_nginx_c50 <= 1.6; added_p50_over_nginx_ms_c1 <= 0.10; "
        "p99_vs_nginx_c50 <= 1.5; rss_mb <= 30; non_2xx == 0"
    )
    if h2_results:
        print("goals (HTTP/2): vs_nginx_rps_4x100 >= 0.5; added_p50_over_nginx_ms_one_stream <= 0.2; "
              "rss_mb_1000_streams <= 60; non_2xx == 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
