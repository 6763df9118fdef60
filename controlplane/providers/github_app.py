"""The `github-app` provider: a GitHub App installation token, narrowed to what the policy names.

The control plane signs an app JWT (RS256 with the app's private key: `iat` 60 s in the past,
`exp` 9 minutes ahead, `iss` = the app's client ID or app ID) and exchanges it at
`POST {api_url}/app/installations/{installation_id}/access_tokens` with `repositories` and
`permissions`; the answer's `token` (`ghs_…`) lives until its `expires_at` (one hour).
https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app,
https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-a-json-web-token-jwt-for-a-github-app
"""

from __future__ import annotations

import jwt

from controlplane.providers.base import MintRequest, UpstreamMintFailed
from controlplane.providers.cached import (
    UPSTREAM_TIMEOUT_SECONDS,
    CachedTokenProvider,
    UpstreamToken,
    json_answer,
    parse_rfc3339,
)
from controlplane.providers.upstream import upstream_request

__all__ = ["DEFAULT_GITHUB_API", "GitHubAppProvider"]

DEFAULT_GITHUB_API = "https://api.github.com"
API_VERSION = "2022-11-28"


class GitHubAppProvider(CachedTokenProvider):
    """Config: `app_id` (or the app's client ID), `installation_id`, `api_url` (GitHub Enterprise
    Server: `https://HOST/api/v3`), `repositories` [names], `permissions` {name: read|write},
    `ca_pem`. Secret: `private_key` (PEM)."""

    per_workload = False  # the installation token is the app's, the same for every caller

    async def _fetch(self, request: MintRequest) -> UpstreamToken:
        config = request.config
        key = request.secret.get("private_key")
        app_id, installation = config.get("app_id"), config.get("installation_id")
        if not isinstance(key, str) or not app_id or not installation:
            raise UpstreamMintFailed("github-app needs app_id, installation_id and private_key")
        now = int(self._clock.time())
        try:
            claims = {"iat": now - 60, "exp": now + 540, "iss": str(app_id)}
            app_jwt = jwt.encode(claims, key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError):
            raise UpstreamMintFailed("the github-app private_key is not an RSA private key") from None
        body: dict[str, object] = {}
        if config.get("repositories"):
            body["repositories"] = list(config["repositories"])
        if config.get("permissions"):
            body["permissions"] = dict(config["permissions"])
        api = str(config.get("api_url") or DEFAULT_GITHUB_API).rstrip("/")
        status, raw = await upstream_request(
            self._http,
            "POST",
            f"{api}/app/installations/{installation}/access_tokens",
            what="GitHub API",
            timeout_seconds=UPSTREAM_TIMEOUT_SECONDS,
            ca_pem=config.get("ca_pem"),
            json=body,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {app_jwt}",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "sesame-controlplane",
            },
        )
        answer = json_answer(status, raw, "GitHub API", ok=(201,))
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise UpstreamMintFailed("the GitHub API answered no token")
        return UpstreamToken(token, parse_rfc3339(answer.get("expires_at"), "the GitHub API"))
