"""Verify projected tokens against the cluster's OIDC discovery document and JWKS."""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from cachetools import TTLCache

from controlplane.attest.claims import check_claims, read_unverified
from controlplane.attest.identity import (
    DEFAULT_SKEW_SECONDS,
    Clock,
    ClusterTrust,
    Identity,
    InvalidSubjectToken,
)
from controlplane.clock import SystemClock
from controlplane.outbound import AddressRefused, OutboundClient, OutboundPolicy

__all__ = [
    "DEFAULT_JWKS_CACHE_SECONDS",
    "DEFAULT_JWKS_FETCH_TIMEOUT_SECONDS",
    "DEFAULT_JWKS_REFETCH_INTERVAL_SECONDS",
    "JwksSettings",
    "JwksVerifier",
]

DEFAULT_JWKS_CACHE_SECONDS = 300
DEFAULT_JWKS_REFETCH_INTERVAL_SECONDS = 10
DEFAULT_JWKS_FETCH_TIMEOUT_SECONDS = 5.0
DEFAULT_MAX_DOCUMENT_BYTES = 256 * 1024
DISCOVERY_SUFFIX = "/.well-known/openid-configuration"


@dataclass(frozen=True, kw_only=True)
class JwksSettings:
    """How long keys are cached, and how often an unknown `kid` may trigger a refetch."""

    cache_seconds: float = DEFAULT_JWKS_CACHE_SECONDS
    refetch_interval_seconds: float = DEFAULT_JWKS_REFETCH_INTERVAL_SECONDS
    fetch_timeout_seconds: float = DEFAULT_JWKS_FETCH_TIMEOUT_SECONDS
    skew_seconds: float = DEFAULT_SKEW_SECONDS
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES


class _KeySet:
    """The verification keys of one cluster, by `kid`."""

    def __init__(self, keys: dict[str, jwt.PyJWK]) -> None:
        self.keys = keys


class JwksVerifier:
    """A `Verifier` for clusters with `verification: jwks`."""

    def __init__(
        self,
        *,
        settings: JwksSettings = JwksSettings(),
        clock: Clock = SystemClock(),
        policy: OutboundPolicy | None = None,
    ) -> None:
        """`policy` (default: global addresses only) guards every discovery and JWKS fetch."""
        self._settings = settings
        self._clock = clock
        self._http = OutboundClient(policy)
        self._cache: TTLCache[str, _KeySet] = TTLCache(
            maxsize=256, ttl=settings.cache_seconds, timer=clock.time
        )
        self._last_fetch: dict[str, float] = {}
        self._generation: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetches = 0

    async def close(self) -> None:
        await self._http.close()

    async def verify(self, token: str, cluster: ClusterTrust) -> Identity:
        header, _ = read_unverified(token)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidSubjectToken("unknown_kid", "the token names no signing key (kid)")
        key = await self._key(cluster, kid)
        if key.algorithm_name != header["alg"]:
            raise InvalidSubjectToken("alg_not_allowed", "the token's alg does not match its signing key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[header["alg"]],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.InvalidSignatureError as exc:
            raise InvalidSubjectToken("bad_signature", "the token's signature does not verify") from exc
        except jwt.PyJWTError as exc:
            raise InvalidSubjectToken("malformed", "the subject token could not be decoded") from exc
        return check_claims(claims, cluster, now=self._clock.time(), skew=self._settings.skew_seconds)

    async def _key(self, cluster: ClusterTrust, kid: str) -> jwt.PyJWK:
        cache_key = f"{cluster.issuer}\n{cluster.jwks_uri or ''}"
        keyset = self._cache.get(cache_key)
        if keyset is None:
            keyset = await self._refresh(cluster, cache_key, force=False)
        if kid in keyset.keys:
            return keyset.keys[kid]
        # An unknown kid may be a freshly rotated key: refetch once, but rate-limited per cluster.
        last = self._last_fetch.get(cache_key, float("-inf"))
        if self._clock.time() - last >= self._settings.refetch_interval_seconds:
            keyset = await self._refresh(cluster, cache_key, force=True)
            if kid in keyset.keys:
                return keyset.keys[kid]
        raise InvalidSubjectToken("unknown_kid", "the token's signing key is not in the cluster's JWKS")

    async def _refresh(self, cluster: ClusterTrust, cache_key: str, *, force: bool) -> _KeySet:
        generation = self._generation.get(cache_key, 0)
        lock = self._locks.setdefault(cache_key, asyncio.Lock())
        async with lock:
            cached = self._cache.get(cache_key)
            # Single flight: if someone refreshed while we waited for the lock, use their result.
            if cached is not None and (not force or self._generation.get(cache_key, 0) != generation):
                return cached
            keyset = _KeySet(await self._fetch_keys(cluster))
            self._generation[cache_key] = generation + 1
            self._last_fetch[cache_key] = self._clock.time()
            self._cache[cache_key] = keyset
            return keyset

    async def _fetch_keys(self, cluster: ClusterTrust) -> dict[str, jwt.PyJWK]:
        self.fetches += 1
        jwks_uri = cluster.jwks_uri
        if not jwks_uri:
            doc = await self._get_json(cluster.issuer.rstrip("/") + DISCOVERY_SUFFIX, cluster)
            if doc.get("issuer") != cluster.issuer:
                raise InvalidSubjectToken(
                    "jwks_unavailable", "the discovery document names a different issuer"
                )
            jwks_uri = doc.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri:
                raise InvalidSubjectToken("jwks_unavailable", "the discovery document has no jwks_uri")
        body = await self._get_json(jwks_uri, cluster)
        keys: dict[str, jwt.PyJWK] = {}
        for raw in body.get("keys") or []:
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig" or not raw.get("kid"):
                continue
            if raw.get("kty") not in ("RSA", "EC"):
                continue  # never accept symmetric ("oct") keys, whatever the JWKS says
            try:
                keys[raw["kid"]] = jwt.PyJWK(raw)
            except jwt.PyJWTError:
                continue
        return keys

    async def _get_json(self, url: str, cluster: ClusterTrust) -> dict[str, Any]:
        tls: ssl.SSLContext | bool = True
        if cluster.ca_pem:
            try:
                tls = ssl.create_default_context(cadata=cluster.ca_pem)
            except (ssl.SSLError, ValueError) as exc:
                raise InvalidSubjectToken("jwks_unavailable", "the cluster ca_pem is not PEM") from exc
        try:
            status, raw = await self._http.request(
                "GET",
                url,
                timeout_seconds=self._settings.fetch_timeout_seconds,
                max_bytes=self._settings.max_document_bytes,
                tls=tls,
            )
        except AddressRefused as exc:
            raise InvalidSubjectToken(
                AddressRefused.code, f"{url} is on an address outbound fetches may not reach"
            ) from exc
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            raise InvalidSubjectToken("jwks_unavailable", f"could not fetch {url}") from exc
        if status != 200:
            raise InvalidSubjectToken("jwks_unavailable", f"fetching {url} answered {status}")
        if len(raw) > self._settings.max_document_bytes:
            raise InvalidSubjectToken("jwks_unavailable", f"{url} answered an oversized document")
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise InvalidSubjectToken("jwks_unavailable", f"{url} did not answer JSON") from exc
        if not isinstance(doc, dict):
            raise InvalidSubjectToken("jwks_unavailable", f"{url} did not answer a JSON object")
        return doc
