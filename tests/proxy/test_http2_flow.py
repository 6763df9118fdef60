"""HTTP/2 flow control through the proxy as a real process: a gRPC app reads a 100 MB server stream
slowly; the proxy relays it in bounded memory and the server is held back while the app does not
read (its writes wait for WINDOW_UPDATEs the proxy gives only as the app takes the data).

The proxy runs with glibc's mmap threshold fixed (`MALLOC_MMAP_THRESHOLD_`): by default glibc raises
the threshold after freeing the first large TLS read buffers, so later ones come from the heap and
~10-13 MB of freed heap stays mapped after the first large TLS transfer (it then plateaus: a second
100 MiB adds < 1 MB; docs/proxy.md, "HTTP/2 and gRPC"). Fixing the threshold measures what the
proxy itself holds."""

from __future__ import annotations

import asyncio
import json
import time

import grpc

from tests.proxy.conftest import route
from tests.proxy.grpc_peers import GrpcServer, method
from tests.proxy.procs import governed_args, start_proxy_process

MESSAGE = 256 * 1024
COUNT = 400  # 100 MiB in all


async def test_a_slow_grpc_reader_holds_back_the_server_and_proxy_memory_stays_flat(cp, pki, token_file):
    with GrpcServer(pki.server_cert, pki.server_key) as server:
        cp.routes = [route("api", "localhost", server.port)]
        proxy = await start_proxy_process(*governed_args(cp.url, token_file, pki),
                                          env={"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})
        try:
            assert (await proxy.wait_ready(100)).status_code == 200
            base = proxy.status("VmRSS")

            def read_slowly() -> dict:
                opts = [("grpc.http_proxy", proxy.url), ("grpc.max_receive_message_length", 64 << 20)]
                creds = grpc.ssl_channel_credentials(pki.client_bundle.read_bytes())
                with grpc.secure_channel(f"localhost:{server.port}", creds, options=opts) as ch:
                    ask = json.dumps({"count": COUNT, "size": MESSAGE}).encode()
                    stream = method(ch, "Stream", "unary_stream")(ask, timeout=120)
                    total = len(next(stream))
                    time.sleep(2.0)  # the app does not read: the server must stall
                    produced_while_stalled = server.produced[0]
                    deadline = time.monotonic() + 100
                    for i, message in enumerate(stream):  # then reads slowly, then at full speed
                        total += len(message)
                        if i < 100:
                            time.sleep(0.01)
                        assert time.monotonic() < deadline
                return {"total": total, "stalled": produced_while_stalled}

            got = await asyncio.to_thread(read_slowly)
            peak = proxy.status("VmHWM")
        finally:
            await proxy.stop()
    assert got["total"] == COUNT * MESSAGE
    print(f"proxy VmRSS before {base} KiB, VmHWM after 100 MiB over h2 {peak} KiB; "
          f"server produced {got['stalled']} of {COUNT} messages while the app did not read")
    assert got["stalled"] < COUNT // 4, "the server was not held back while the app did not read"
    assert (peak - base) * 1024 < 10 * 1024 * 1024, f"RSS grew from {base} KiB to a peak of {peak} KiB"
