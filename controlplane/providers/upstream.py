"""One request from a credential provider to its upstream (token endpoint, STS, IAM Credentials,
GitHub), through the outbound address policy, with failures mapped to the provider error codes:
refused address → `outbound_address_refused`, no answer in time → `provider_timeout`, unreachable
or 5xx → `provider_unavailable`. What the upstream's 4xx means is the caller's to map."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from controlplane.outbound import AddressRefused, OutboundClient
from controlplane.providers.base import ProviderAddressRefused, ProviderTimeout, ProviderUnavailable

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "tls_for", "upstream_request"]

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024


def tls_for(ca_pem: Any) -> ssl.SSLContext | bool:
    """The provider's own CA (`ca_pem`) when configured, else the system's."""
    if isinstance(ca_pem, str) and ca_pem.strip():
        return ssl.create_default_context(cadata=ca_pem)
    return True


async def upstream_request(
    http: OutboundClient,
    method: str,
    url: str,
    *,
    what: str,
    timeout_seconds: float,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ca_pem: Any = None,
    **kwargs: Any,
) -> tuple[int, bytes]:
    """(status, body); a 5xx is `provider_unavailable`. `what` names the upstream in messages."""
    try:
        status, raw = await http.request(
            method, url, timeout_seconds=timeout_seconds, max_bytes=max_bytes, tls=tls_for(ca_pem), **kwargs
        )
    except AddressRefused:
        raise ProviderAddressRefused(f"the {what} is on an address outbound fetches may not reach") from None
    except TimeoutError:
        raise ProviderTimeout(f"the {what} did not answer in time") from None
    except (aiohttp.ClientError, ssl.SSLError) as exc:
        # Never the exception text: it may quote the request.
        raise ProviderUnavailable(f"the {what} is unreachable ({type(exc).__name__})") from None
    if status >= 500:  # nothing of the body: it is the endpoint's to say, not the caller's to read
        raise ProviderUnavailable(f"the {what} answered {status}")
    return status, raw
