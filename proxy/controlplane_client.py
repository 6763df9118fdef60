"""The proxy's client for the control plane's proxy-facing API (routes, token exchange, fleet reports)."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from proxy.errors import ApprovalPending, CredentialUnavailable, Denied
from proxy.identity import TokenFile

__all__ = ["DEFAULT_CP_TIMEOUT", "JWT_TOKEN_TYPE", "ControlPlaneClient"]

DEFAULT_CP_TIMEOUT = 5.0
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
_DENIALS = {"policy_denied", "workload_revoked", "unknown_workload", "unknown_target"}
log = logging.getLogger("sesame.proxy.controlplane")


class ControlPlaneClient:
    """Every call authenticates with the current service-account token; failures become ProxyErrors.

    Transient failures (unreachable, 5xx, 429, rejected token) raise CredentialUnavailable so a
    cached credential may keep serving; definitive refusals raise Denied / ApprovalPending.
    """

    def __init__(self, base_url: str, token: TokenFile, *, timeout: float = DEFAULT_CP_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, trust_env=False)
        return self._session

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token.read()}"}

    async def get_routes(self, etag: str | None) -> tuple[list[dict], str | None, int] | None:
        """(routes, etag, refresh_seconds), or None when unchanged (304)."""
        headers = self._auth()
        if etag:
            headers["If-None-Match"] = etag
        status, body, resp_headers = await self._call("GET", "/v1/proxy/routes", headers=headers)
        if status == 304:
            return None
        if status != 200 or not isinstance(body, dict):
            raise CredentialUnavailable(f"route refresh failed: {_describe(status, body)}")
        return (
            list(body.get("routes") or []),
            resp_headers.get("ETag"),
            int(body.get("refresh_seconds") or 30),
        )

    async def exchange(self, audience: str) -> tuple[str, float]:
        """RFC 8693 exchange of the SA token for the target's credential → (access_token, expires_in)."""
        payload = {
            "subject_token": self.token.read(),
            "subject_token_type": JWT_TOKEN_TYPE,
            "audience": audience,
        }
        status, body, _ = await self._call("POST", "/v1/token-exchange", json=payload)
        if status == 200 and isinstance(body, dict) and body.get("access_token"):
            return str(body["access_token"]), float(body.get("expires_in") or 60)
        code = body.get("error") if isinstance(body, dict) else None
        if status == 202 or (isinstance(body, dict) and body.get("status") == "approval_pending"):
            approval_id = body.get("approval_id") if isinstance(body, dict) else None
            raise ApprovalPending("the policy for this target requires an approval", approval_id=approval_id)
        if status in (403, 404) and code in _DENIALS:
            raise Denied(code, str(body.get("message") or code))
        raise CredentialUnavailable(f"token exchange failed: {_describe(status, body)}")

    async def heartbeat(self, pod: str, version: str) -> None:
        await self._report("/v1/proxy/heartbeat", {"pod": pod, "version": version})

    async def observations(self, batch: list[dict[str, Any]]) -> None:
        await self._report("/v1/proxy/observations", batch)

    async def _report(self, path: str, payload: Any) -> None:
        status, body, _ = await self._call("POST", path, json=payload, headers=self._auth())
        if status >= 300:
            raise CredentialUnavailable(f"{path} failed: {_describe(status, body)}")

    async def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
        try:
            async with self._http().request(method, self.base_url + path, **kwargs) as resp:
                body: Any = None
                if resp.content_type == "application/json":
                    body = await resp.json()
                else:
                    await resp.read()
                return resp.status, body, resp.headers
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise CredentialUnavailable(f"control plane unreachable: {type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _describe(status: int, body: Any) -> str:
    code = body.get("error") if isinstance(body, dict) else None
    return f"HTTP {status}" + (f" {code}" if code else "")
