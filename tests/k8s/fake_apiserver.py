"""The slice of kube-apiserver that `sesame-k8s-bootstrap` calls, in its exact JSON wire format.

No apiserver runs here, so this serves Secrets (GET/POST/PUT under /api/v1/namespaces/NS/secrets)
and MutatingWebhookConfigurations (GET, and PATCH with application/json-patch+json) from memory,
with the apiserver's Status bodies for 404/409/415, over plain HTTP on 127.0.0.1 (a thread, so the
synchronous `kubernetes` client can call it). Every request is recorded.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonpatch

_SECRETS = re.compile(r"^/api/v1/namespaces/([^/]+)/secrets(?:/([^/?]+))?$")
_MWC = re.compile(r"^/apis/admissionregistration\.k8s\.io/v1/mutatingwebhookconfigurations/([^/?]+)$")
TOKEN = "fake-apiserver-token"


class FakeApiServer:
    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self._versions = itertools.count(1)
        self._lock = threading.Lock()

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes]:
        return {k: base64.b64decode(v) for k, v in self.secrets[(namespace, name)]["data"].items()}

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    def handle(self, method: str, path: str, body: Any, content_type: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append((method, path))
            if match := _SECRETS.match(path):
                return self._secrets(method, match.group(1), match.group(2), body)
            if match := _MWC.match(path):
                return self._webhook(method, match.group(1), body, content_type)
            return _status(404, "NotFound", f"the server could not find the requested resource ({path})")

    def _secrets(self, method: str, ns: str, name: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        key = (ns, name or (body or {}).get("metadata", {}).get("name", ""))
        if method == "GET" and name:
            if key not in self.secrets:
                return _status(404, "NotFound", f'secrets "{name}" not found', name=name, kind="secrets")
            return 200, self.secrets[key]
        if method == "POST" and not name:
            if key in self.secrets:
                return _status(409, "AlreadyExists", f'secrets "{key[1]}" already exists', name=key[1])
            return 201, self._store(key, body)
        if method == "PUT" and name:
            if key not in self.secrets:
                return _status(404, "NotFound", f'secrets "{name}" not found', name=name, kind="secrets")
            return 200, self._store(key, body)
        return _status(405, "MethodNotAllowed", f"{method} not allowed")

    def _store(self, key: tuple[str, str], body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        obj["metadata"].update(namespace=key[0], resourceVersion=str(next(self._versions)))
        obj["metadata"].setdefault("uid", f"uid-{key[1]}")
        for value in obj.get("data", {}).values():
            base64.b64decode(value, validate=True)  # the apiserver refuses non-base64 data
        self.secrets[key] = obj
        return obj

    def _webhook(self, method: str, name: str, body: Any, content_type: str) -> tuple[int, dict[str, Any]]:
        if name not in self.webhooks:
            return _status(404, "NotFound", f'mutatingwebhookconfigurations "{name}" not found', name=name)
        if method == "GET":
            return 200, self.webhooks[name]
        if method == "PATCH":
            if content_type != "application/json-patch+json":
                return _status(415, "UnsupportedMediaType", f"unsupported patch type {content_type}")
            self.webhooks[name] = jsonpatch.apply_patch(self.webhooks[name], body)
            self.webhooks[name]["metadata"]["resourceVersion"] = str(next(self._versions))
            return 200, self.webhooks[name]
        return _status(405, "MethodNotAllowed", f"{method} not allowed")


def _status(code: int, reason: str, message: str, **details: str) -> tuple[int, dict[str, Any]]:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return code, body


def _handler(server: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                code, body = _status(401, "Unauthorized", "Unauthorized")
            else:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                content_type = (self.headers.get("Content-Type") or "").split(";")[0]
                code, body = server.handle(
                    self.command, self.path.split("?")[0], json.loads(raw) if raw else None, content_type
                )
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = _serve

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def fake_apiserver(tmp_path: Path) -> Iterator[tuple[FakeApiServer, Path]]:
    """(the server's state, a kubeconfig file pointing at it)."""
    state = FakeApiServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, name="fake-apiserver", daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{httpd.server_port}"}}
                ],
                "users": [{"name": "job", "user": {"token": TOKEN}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "job"}}],
                "current-context": "fake",
            }
        )
    )
    try:
        yield state, kubeconfig
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
