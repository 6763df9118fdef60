"""The control plane's exception tree: each error carries its stable `code` and HTTP `status`.

One middleware (`controlplane.middlewares`) turns them into `{"error": code, "message": ...}`.
Other modules subclass `SesameError` for their own denials (e.g. `policy_denied`).
"""

from __future__ import annotations

__all__ = [
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "KekUnavailable",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "RateLimited",
    "SesameError",
    "StartupError",
    "StoreError",
    "Unauthorized",
]


class SesameError(Exception):
    """Base of every error the control plane answers with."""

    code, status = "internal", 500

    def __init__(self, message: str = "", **extra: object) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.extra = extra

    def body(self) -> dict[str, object]:
        """The JSON error document."""
        return {"error": self.code, "message": self.message, **self.extra}

    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. Retry-After)."""
        return {}


class InvalidRequest(SesameError):
    """The request body, query or path does not validate; `field` names the culprit."""

    code, status = "invalid_request", 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.field = field


class Unauthorized(SesameError):
    """No credential, or one that is unknown or revoked."""

    code, status = "unauthorized", 401


class Forbidden(SesameError):
    """The caller's role lacks the route's permission."""

    code, status = "forbidden", 403


class NotFound(SesameError):
    """The resource does not exist."""

    code, status = "not_found", 404


class Conflict(SesameError):
    """The resource (or a unique attribute of it) already exists."""

    code, status = "conflict", 409


class PreconditionFailed(SesameError):
    """`If-Match` names a version that is not the stored one (`current_etag` is); re-read and retry."""

    code, status = "precondition_failed", 412

    def __init__(self, message: str, *, current_etag: str) -> None:
        super().__init__(message, current_etag=current_etag)
        self.current_etag = current_etag

    def headers(self) -> dict[str, str]:
        return {"ETag": self.current_etag}


class PayloadTooLarge(SesameError):
    """The request body exceeds the configured limit."""

    code, status = "payload_too_large", 413


class RateLimited(SesameError):
    """Too many requests for this key; retry after `retry_after` seconds."""

    code, status = "rate_limited", 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class KekUnavailable(SesameError):
    """A secret must be sealed or opened but no key-encryption key is configured."""

    code, status = "kek_unavailable", 503


class StoreError(SesameError):
    """The database failed underneath (translated from aiosqlite)."""

    code, status = "store_unavailable", 503


class StartupError(SesameError):
    """The service cannot start (bad configuration, missing KEK, newer schema)."""

    code, status = "startup_error", 500
