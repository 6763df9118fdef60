"""What every credential provider takes and returns."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from controlplane.attest.identity import Identity
from controlplane.errors import SesameError

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "DEFAULT_MAX_TTL_SECONDS",
    "JWT_TOKEN_TYPE",
    "CredentialProvider",
    "InvalidCredentialValue",
    "IssuedCredential",
    "MintRequest",
    "ProviderAddressRefused",
    "ProviderDenied",
    "ProviderTimeout",
    "ProviderUnavailable",
    "UpstreamMintFailed",
]

DEFAULT_MAX_TTL_SECONDS = 300
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
_CTL = re.compile(r"[\x00-\x1f\x7f]")


class UpstreamMintFailed(SesameError):
    """The provider could not produce a credential (upstream down, refused, or misconfigured)."""

    code, status = "upstream_mint_failed", 502


class InvalidCredentialValue(UpstreamMintFailed):
    """The provider produced a value holding a control character (CR, LF, NUL, …): it would split the
    header the proxy writes it into, so it is refused and never reaches a workload."""

    code = "invalid_credential"


class ProviderTimeout(UpstreamMintFailed):
    """The credential provider (its upstream endpoint) did not answer in time: the provider's side."""

    code, status = "provider_timeout", 504


class ProviderUnavailable(UpstreamMintFailed):
    """The provider's upstream is unreachable or failing (5xx), or its circuit breaker is open."""

    code, status = "provider_unavailable", 503


class ProviderDenied(UpstreamMintFailed):
    """The provider's upstream refused this workload (federation rejected: wrong audience, expired or
    untrusted token, no permission): a policy matter on the provider's side, not an outage."""

    code, status = "provider_denied", 403


class ProviderAddressRefused(UpstreamMintFailed):
    """The provider's endpoint is on an address the outbound policy refuses (SESAME_OUTBOUND_ALLOW)."""

    code, status = "outbound_address_refused", 502


@dataclass(frozen=True, kw_only=True)
class MintRequest:
    """One credential to issue: for whom, for which audience, under which provider settings."""

    identity: Identity
    audience: str
    max_ttl_seconds: int
    provider_id: str
    config: Mapping[str, Any]
    secret: Mapping[str, Any] = field(default_factory=dict, repr=False)
    secret_version: str = ""


@dataclass(frozen=True, kw_only=True)
class IssuedCredential:
    """The RFC 8693 response body, minus what the route adds."""

    access_token: str = field(repr=False)
    expires_in: int
    token_type: str = "Bearer"
    issued_token_type: str = ACCESS_TOKEN_TYPE

    def __post_init__(self) -> None:
        if _CTL.search(self.access_token):
            raise InvalidCredentialValue("the credential provider returned a value with a control character")

    def response(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "issued_token_type": self.issued_token_type,
            "token_type": self.token_type,
            "expires_in": self.expires_in,
        }


class CredentialProvider(Protocol):
    """Issues a credential for one exchange; raises `UpstreamMintFailed`.

    A provider whose result is the same for every caller of a key (an upstream token) may define
    `flight_key(request) -> str`: concurrent calls with one key then share one `issue`
    (`controlplane.providers.guard`).
    """

    async def issue(self, request: MintRequest) -> IssuedCredential: ...
