"""A real gRPC server (grpcio, generic handlers on raw bytes: no generated code) for proxy tests.

Methods of service `sesame.test.Echo`:
- `Unary`: answers JSON {"authorization", "len", "metadata"} — what the server saw, read by an
  interceptor (`seen`), so tests check the injected credential server-side;
- `Stream`: request JSON {"count", "size"} → `count` messages of `size` bytes (server-streaming);
- `Bidi`: echoes each message back, upper-cased (bidirectional);
- `Sleep`: request JSON {"seconds"} → answers after sleeping (deadlines).
"""

from __future__ import annotations

import json
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

SERVICE = "sesame.test.Echo"
_STREAM_LIMIT = 20_000  # messages per Stream call at most (tests bound their loops)


class _Recorder(grpc.ServerInterceptor):
    """Records the `authorization` metadata of every call as the server received it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()

    def intercept_service(self, continuation, handler_call_details):
        md = dict(handler_call_details.invocation_metadata)
        with self._lock:
            self.seen.append((handler_call_details.method, md.get("authorization")))
        return continuation(handler_call_details)


def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    md = dict(context.invocation_metadata())
    return json.dumps({"authorization": md.get("authorization"), "len": len(request),
                       "metadata": {k: v for k, v in md.items() if isinstance(v, str)}}).encode()


def _stream(request: bytes, context: grpc.ServicerContext, produced: list[int]):
    ask = json.loads(request)
    chunk = b"s" * int(ask["size"])
    for _ in range(min(int(ask["count"]), _STREAM_LIMIT)):
        if not context.is_active():
            return
        produced[0] += 1
        yield chunk


def _bidi(requests, context: grpc.ServicerContext):
    for message in requests:
        yield message.upper()


def _sleep(request: bytes, context: grpc.ServicerContext) -> bytes:
    time.sleep(min(float(json.loads(request)["seconds"]), 10.0))
    return b"slept"


class GrpcServer:
    """A grpcio server on `host` (TLS when cert/key are given, else plaintext h2c)."""

    def __init__(self, cert: Path | None = None, key: Path | None = None, host: str = "127.0.0.1",
                 options: tuple[tuple[str, int], ...] = ()) -> None:
        self.recorder = _Recorder()
        self.produced = [0]  # Stream messages handed to gRPC so far (it blocks when flow control does)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            interceptors=[self.recorder],
            options=[("grpc.max_receive_message_length", 64 << 20),
                     ("grpc.max_send_message_length", 64 << 20), *options],
        )
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(lambda r, c: _stream(r, c, self.produced)),
            "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
            "Sleep": grpc.unary_unary_rpc_method_handler(_sleep),
        })])
        if cert is not None and key is not None:
            creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
            self.port = self.server.add_secure_port(f"{host}:0", creds)
        else:
            self.port = self.server.add_insecure_port(f"{host}:0")

    @property
    def seen(self) -> list[tuple[str, str | None]]:
        return self.recorder.seen

    def __enter__(self) -> GrpcServer:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(0)


def grpc_frame(message: bytes) -> bytes:
    """One length-prefixed gRPC message (uncompressed), as on the wire inside DATA frames."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def method(channel: grpc.Channel, name: str, kind: str = "unary_unary"):
    """A raw-bytes callable for `SERVICE/name` (kind: unary_unary, unary_stream, stream_stream)."""
    return getattr(channel, kind)(f"/{SERVICE}/{name}")
