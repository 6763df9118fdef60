"""The `oauth2-client-credentials` provider: fetch (and cache) a token from the upstream's endpoint."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from cachetools import TTLCache

from controlplane.clock import Clock, SystemClock
from controlplane.outbound import OutboundClient, OutboundPolicy
from controlplane.providers.base import IssuedCredential, MintRequest, UpstreamMintFailed
from controlplane.providers.upstream import DEFAULT_MAX_RESPONSE_BYTES, upstream_request

__all__ = [
    "DEFAULT_REFRESH_MARGIN_SECONDS",
    "DEFAULT_TOKEN_ENDPOINT_TIMEOUT_SECONDS",
    "OAuth2ClientCredentialsProvider",
    "OAuth2Settings",
]

DEFAULT_REFRESH_MARGIN_SECONDS = 60
DEFAULT_TOKEN_ENDPOINT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, kw_only=True)
class OAuth2Settings:
    """Upstream tokens are reused until `refresh_margin_seconds` before they expire."""

    refresh_margin_seconds: float = DEFAULT_REFRESH_MARGIN_SECONDS
    timeout_seconds: float = DEFAULT_TOKEN_ENDPOINT_TIMEOUT_SECONDS
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


@dataclass(frozen=True)
class _Token:
    access_token: str
    token_type: str
    expires_at: float


class OAuth2ClientCredentialsProvider:
    """RFC 6749 §4.4 against the configured token endpoint.

    Config: `token_url`, `client_id`, `auth_method` (`client_secret_basic` default, or
    `client_secret_post`), `scopes` (list), `extra_params` (object), optional `ca_pem`.
    Secret: `client_secret`.
    """

    def __init__(
        self,
        *,
        settings: OAuth2Settings = OAuth2Settings(),
        clock: Clock = SystemClock(),
        policy: OutboundPolicy | None = None,
    ) -> None:
        """`policy` (default: global addresses only) guards every token endpoint request."""
        self._settings = settings
        self._http = OutboundClient(policy)
        self._clock = clock
        self._tokens: TTLCache[str, _Token] = TTLCache(maxsize=4096, ttl=24 * 3600, timer=clock.time)
        self.fetches = 0

    async def close(self) -> None:
        await self._http.close()

    def flight_key(self, request: MintRequest) -> str:
        """Concurrent exchanges for one provider config and secret share one upstream fetch."""
        return self._cache_key(request)

    async def issue(self, request: MintRequest) -> IssuedCredential:
        key = self._cache_key(request)
        token = self._fresh(key) or await self._fetch(request, key)
        remaining = int(token.expires_at - self._clock.time())
        return IssuedCredential(
            access_token=token.access_token,
            token_type=token.token_type,
            expires_in=max(1, min(remaining, request.max_ttl_seconds)),
        )

    def _fresh(self, key: str) -> _Token | None:
        token = self._tokens.get(key)
        if token is None or token.expires_at - self._settings.refresh_margin_seconds <= self._clock.time():
            return None
        return token

    @staticmethod
    def _cache_key(request: MintRequest) -> str:
        """Changes when the provider's config or secret changes, so a rotation is never served stale."""
        material = json.dumps([dict(request.config), dict(request.secret)], sort_keys=True, default=str)
        return request.provider_id + ":" + hashlib.sha256(material.encode()).hexdigest()

    async def _fetch(self, request: MintRequest, key: str) -> _Token:
        config, secret = request.config, request.secret
        token_url = config.get("token_url")
        client_id = config.get("client_id")
        client_secret = secret.get("client_secret")
        if not (isinstance(token_url, str) and isinstance(client_id, str) and isinstance(client_secret, str)):
            raise UpstreamMintFailed("the provider needs token_url, client_id and client_secret")
        form: dict[str, str] = {"grant_type": "client_credentials"}
        scopes = config.get("scopes") or []
        if scopes:
            form["scope"] = " ".join(scopes)
        form.update({str(k): str(v) for k, v in (config.get("extra_params") or {}).items()})
        headers = {"Accept": "application/json"}
        if config.get("auth_method", "client_secret_basic") == "client_secret_post":
            form.update(client_id=client_id, client_secret=client_secret)
        else:
            headers["Authorization"] = _basic(client_id, client_secret)
        self.fetches += 1
        started = self._clock.time()
        body = await self._post(token_url, form, headers, config.get("ca_pem"))
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise UpstreamMintFailed("the upstream token endpoint answered no access_token")
        lifetime = body.get("expires_in")
        if isinstance(lifetime, str) and lifetime.isdigit():
            lifetime = int(lifetime)
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = request.max_ttl_seconds  # RFC 6749: expires_in is only RECOMMENDED
        token_type = body.get("token_type") if isinstance(body.get("token_type"), str) else "Bearer"
        token = _Token(
            access_token, "Bearer" if token_type.lower() == "bearer" else token_type, started + lifetime
        )
        self._tokens[key] = token
        return token

    async def _post(self, url: str, form: dict[str, str], headers: dict[str, str], ca_pem: Any) -> dict:
        status, raw = await upstream_request(
            self._http,
            "POST",
            url,
            what="upstream token endpoint",
            timeout_seconds=self._settings.timeout_seconds,
            max_bytes=self._settings.max_response_bytes,
            ca_pem=ca_pem,
            data=form,
            headers=headers,
        )
        try:
            body = json.loads(raw) if len(raw) <= self._settings.max_response_bytes else None
        except ValueError:
            body = None
        if status != 200:
            raise UpstreamMintFailed(f"the upstream token endpoint answered {status}")
        if not isinstance(body, dict):
            raise UpstreamMintFailed("the upstream token endpoint did not answer a JSON object")
        return body


def _basic(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: client_secret_basic form-urlencodes id and secret before base64."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()
