"""sesamectl's HTTP client: one JSON request per call over urllib, API errors as one line."""

from __future__ import annotations

import functools
import http.client
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_PAGES", "TIMEOUT_SECONDS", "Api", "CliError"]

MAX_PAGES = 10_000
TIMEOUT_SECONDS = 30
# A 429 is retried after its Retry-After this many times, when that is at most MAX_RETRY_AFTER s.
RATE_LIMIT_RETRIES = 3
MAX_RETRY_AFTER = 60


class CliError(Exception):
    """One line for the user; exit status 1 (API / network) or 2 (usage)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Api:
    """The REST API of one control plane, authenticated with an admin key."""

    def __init__(
        self, url: str, key: str, *, ca_cert: str | None = None, tls_server_name: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.key = key
        ctx = _ssl_context(ca_cert) if ca_cert else ssl.create_default_context()
        self._open = urllib.request.build_opener(_HttpsHandler(ctx, tls_server_name)).open
        self.last_headers: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        raw: bool = False,
    ) -> Any:
        q = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.url + path + (f"?{urllib.parse.urlencode(q)}" if q else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.key}",
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if data is not None else {}),
            },
        )
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                with self._open(req, timeout=TIMEOUT_SECONDS) as resp:
                    payload = resp.read()
                    self.last_headers = dict(resp.headers.items())
                break
            except urllib.error.HTTPError as exc:
                wait = _retry_after(exc)
                if wait is None or attempt == RATE_LIMIT_RETRIES:
                    raise CliError(_api_error(exc)) from None
                time.sleep(wait)  # rate limited: a long apply waits its turn instead of failing midway
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise CliError(f"cannot reach {self.url}: {reason}") from None
        if raw:
            return payload
        return json.loads(payload) if payload else None

    def pages(self, path: str, query: dict[str, Any], *, key: str, follow: bool) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = None
        for _ in range(MAX_PAGES):
            body = self.request("GET", path, query={**query, "cursor": cursor})
            rows.extend(body[key])
            cursor = body.get("next_cursor")
            if not follow or not cursor:
                break
        return rows


class _NamedHttpsConnection(http.client.HTTPSConnection):
    """An HTTPS connection that verifies the certificate against `server_name`, not the URL's host
    (a control plane reached through `kubectl port-forward` on localhost)."""

    def __init__(self, *args: Any, server_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.server_name)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext, server_name: str | None) -> None:
        super().__init__(context=context)
        self._server_name = server_name

    def https_open(self, req: urllib.request.Request) -> Any:
        if not self._server_name:
            return super().https_open(req)
        conn = functools.partial(_NamedHttpsConnection, server_name=self._server_name)
        return self.do_open(conn, req, context=self._context)


def _ssl_context(ca_cert: str) -> ssl.SSLContext:
    """System roots plus the PEM file `ca_cert` (the chart's CA is in no system store)."""
    try:
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(cafile=ca_cert)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"bad --ca-cert {ca_cert}: {exc}", 2) from None
    return ctx


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    """Seconds to wait before retrying a 429, or None when it is not one worth waiting for."""
    if exc.code != 429:
        return None
    try:
        wait = float(exc.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return wait if 0 <= wait <= MAX_RETRY_AFTER else None


def _api_error(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    code = body.get("error", f"http_{exc.code}")
    message = body.get("message", exc.reason)
    field = f" (field: {body['field']})" if body.get("field") else ""
    retry = f" (retry after {exc.headers.get('Retry-After')}s)" if exc.code == 429 else ""
    return f"{exc.code} {code}: {message}{field}{retry}"
