"""Stand-alone TCP peer run inside a network namespace by the netfilter tests (stdlib only).

``serve NAME ADDR:PORT...``: accept on every address, answer each connection with one line
``NAME <local port> <original destination>`` (SO_ORIGINAL_DST, or ``-`` when not redirected) and close
(ADDR may be ``[IPv6]``: IPv6 uses IP6T_SO_ORIGINAL_DST and prints ``[addr]:port``);
prints ``ready`` once listening and exits after ``--lifetime`` seconds or when stdin closes.
``connect HOST PORT``: print the line the server sent, or ``error: ...``.
"""

from __future__ import annotations

import selectors
import socket
import struct
import sys
import time

SO_ORIGINAL_DST = 80
LIFETIME_SECONDS = 60.0


def original_dst(conn: socket.socket) -> str:
    v6 = conn.family == socket.AF_INET6
    try:
        if v6:
            raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        else:
            raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return "-"
    if v6:
        port, addr = struct.unpack_from("!2xH4x16s", raw)
        host = socket.inet_ntop(socket.AF_INET6, addr)
    else:
        port, addr = struct.unpack("!2xH4s8x", raw)
        host = socket.inet_ntoa(addr)
    if (host, port) == conn.getsockname()[:2]:
        return "-"
    return f"[{host}]:{port}" if v6 else f"{host}:{port}"


def serve(name: str, addrs: list[str]) -> int:
    sel = selectors.DefaultSelector()
    for spec in addrs:
        host, _, port = spec.rpartition(":")
        v6 = host.startswith("[")
        sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6:
            host = host.strip("[]")
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, int(port)))
        sock.listen(64)
        sel.register(sock, selectors.EVENT_READ, "listen")
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    print("ready", flush=True)
    deadline = time.monotonic() + LIFETIME_SECONDS
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            if key.data == "stdin":
                if not sys.stdin.readline():
                    return 0
                continue
            conn, _ = key.fileobj.accept()
            with conn:
                line = f"{name} {conn.getsockname()[1]} {original_dst(conn)}\n"
                conn.sendall(line.encode())
    return 0


def connect(host: str, port: int) -> int:
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            data = b""
            while not data.endswith(b"\n") and len(data) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        print(data.decode().strip())
    except OSError as exc:
        print(f"error: {exc}")
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        sys.exit(serve(sys.argv[2], sys.argv[3:]))
    sys.exit(connect(sys.argv[2], int(sys.argv[3])))
