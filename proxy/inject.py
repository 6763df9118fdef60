"""Credential injection: overwrite the configured header or query parameter on a governed request."""

from __future__ import annotations

import base64
from collections.abc import Callable
from urllib.parse import quote

from proxy.routes import Injection

__all__ = ["Injector", "compile_injector"]

Headers = list[tuple[str, str]]
# (headers, request target, credential) → new request target; headers are edited in place.
Injector = Callable[[Headers, str, str], str]


def _set_header(headers: Headers, name: str, value: str) -> None:
    """Remove every existing `name` (any case; e.g. a placeholder credential) and append ours."""
    lname = name.lower()
    headers[:] = [h for h in headers if h[0].lower() != lname]
    headers.append((name, value))


def compile_injector(spec: Injection) -> Injector:
    """Build the per-route injection step once, so the hot path only calls it."""
    if spec.type == "bearer":
        prefix = spec.prefix if spec.prefix is not None else "Bearer "

        def bearer(headers: Headers, target: str, token: str) -> str:
            _set_header(headers, "Authorization", prefix + token)
            return target

        return bearer
    if spec.type == "basic":

        def basic(headers: Headers, target: str, token: str) -> str:
            _set_header(headers, "Authorization", "Basic " + base64.b64encode(token.encode()).decode("ascii"))
            return target

        return basic
    if spec.type == "header":
        name, prefix = spec.name or "", spec.prefix or ""

        def header(headers: Headers, target: str, token: str) -> str:
            _set_header(headers, name, prefix + token)
            return target

        return header
    if spec.type == "query":
        key = quote(spec.name or "", safe="")
        key_eq = key + "="

        def query(headers: Headers, target: str, token: str) -> str:
            path, sep, qs = target.partition("?")
            params = [p for p in qs.split("&") if p and p != key and not p.startswith(key_eq)] if sep else []
            params.append(key_eq + quote((spec.prefix or "") + token, safe=""))
            return path + "?" + "&".join(params)

        return query
    raise ValueError(f"unknown injection type {spec.type!r}")
