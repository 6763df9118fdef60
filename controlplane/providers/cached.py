"""What the token-fetching providers share: an outbound client, a token cache keyed by the
provider's config and secret (and, for providers whose upstream token names the workload, the
workload), refreshed `REFRESH_MARGIN_SECONDS` before the upstream's expiry, and the answer's
`expires_in` = the remaining lifetime capped by the policy."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cachetools import TTLCache

from controlplane.clock import Clock, SystemClock
from controlplane.outbound import OutboundClient, OutboundPolicy
from controlplane.providers.base import (
    IssuedCredential,
    MintRequest,
    ProviderDenied,
    ProviderUnavailable,
    UpstreamMintFailed,
)
from controlplane.providers.signed_jwt import sign_workload_jwt
from controlplane.signing_keys import SigningKeys

__all__ = [
    "REFRESH_MARGIN_SECONDS",
    "UPSTREAM_TIMEOUT_SECONDS",
    "CachedTokenProvider",
    "FederatingProvider",
    "UpstreamToken",
    "json_answer",
    "parse_rfc3339",
]

REFRESH_MARGIN_SECONDS = 60
UPSTREAM_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class UpstreamToken:
    value: str
    expires_at: float


def parse_rfc3339(text: Any, what: str) -> float:
    """`2026-01-01T00:00:00Z` (or with an offset, or fractional seconds) → seconds since the epoch."""
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise UpstreamMintFailed(f"{what} answered no valid expiry time") from None


class CachedTokenProvider:
    """Subclasses implement `_fetch(request) -> UpstreamToken`; `per_workload` says whether the
    upstream's token names the workload (federation) or is the same for every caller (an app's)."""

    per_workload = True
    token_type = "Bearer"

    def __init__(self, *, clock: Clock = SystemClock(), policy: OutboundPolicy | None = None) -> None:
        self._clock = clock
        self._http = OutboundClient(policy)
        self._tokens: TTLCache[str, UpstreamToken] = TTLCache(maxsize=4096, ttl=24 * 3600, timer=clock.time)
        self.fetches = 0

    async def close(self) -> None:
        await self._http.close()

    def flight_key(self, request: MintRequest) -> str:
        """One upstream call per provider config, secret (and workload) at a time; a rotation or a
        config change makes a new key, so nothing stale is served."""
        material = json.dumps([dict(request.config), dict(request.secret)], sort_keys=True, default=str)
        if self.per_workload:
            identity = request.identity
            material += f"\n{identity.cluster}/{identity.namespace}/{identity.service_account}"
        return request.provider_id + ":" + hashlib.sha256(material.encode()).hexdigest()

    async def issue(self, request: MintRequest) -> IssuedCredential:
        key = self.flight_key(request)
        token = self._tokens.get(key)
        if token is None or token.expires_at - REFRESH_MARGIN_SECONDS <= self._clock.time():
            self.fetches += 1
            token = await self._fetch(request)
            self._tokens[key] = token
        remaining = int(token.expires_at - self._clock.time())
        return IssuedCredential(
            access_token=token.value,
            expires_in=max(1, min(remaining, request.max_ttl_seconds)),
            token_type=self.token_type,
        )

    async def _fetch(self, request: MintRequest) -> UpstreamToken:
        raise NotImplementedError


_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def json_answer(status: int, raw: bytes, what: str, ok: tuple[int, ...] = (200,)) -> dict[str, Any]:
    """The JSON object of a successful answer, else the refusal as a provider error: 429 →
    `provider_unavailable`; another 4xx → `provider_denied` naming the upstream's error code (an
    OAuth2 `error`, Google's `error.status`), never its description."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if status in ok:
        if not isinstance(body, dict):
            raise UpstreamMintFailed(f"the {what} did not answer a JSON object")
        return body
    code = None
    if isinstance(body, dict):
        error = body.get("error")
        code = error.get("status") if isinstance(error, dict) else error
    named = f" ({code})" if isinstance(code, str) and _CODE.fullmatch(code) else ""
    if status == 429:
        raise ProviderUnavailable(f"the {what} is throttling (429){named}")
    if 400 <= status < 500:
        raise ProviderDenied(f"the {what} refused this workload: {status}{named}")
    raise UpstreamMintFailed(f"the {what} answered {status}")


class FederatingProvider(CachedTokenProvider):
    """A provider whose upstream trusts Sesame's issuer: it signs a token naming the workload."""

    def __init__(
        self, *, keys: SigningKeys, issuer_url: str, clock: Clock = SystemClock(),
        policy: OutboundPolicy | None = None,
    ) -> None:
        super().__init__(clock=clock, policy=policy)
        self._keys, self._issuer = keys, issuer_url.rstrip("/")

    async def _workload_token(
        self, request: MintRequest, audience: str, *, ttl: int = 300, extra: dict[str, Any] | None = None
    ) -> str:
        return await sign_workload_jwt(
            self._keys, issuer=self._issuer, identity=request.identity, audience=audience, ttl=ttl,
            now=int(self._clock.time()), extra=extra,
        )
