"""The proxy's exception tree: every failure a client can see has a stable code and an HTTP status."""

from __future__ import annotations

__all__ = [
    "ApprovalPending",
    "BadRequest",
    "ClientTimeout",
    "ConfigError",
    "CredentialUnavailable",
    "Denied",
    "HeadTooLarge",
    "HeaderTimeout",
    "InvalidCredential",
    "MisdirectedRequest",
    "ProviderFailed",
    "ProxyError",
    "URITooLong",
    "UnsupportedTransferCoding",
    "UpstreamProtocolError",
    "UpstreamTLSError",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "VersionNotSupported",
]


class ProxyError(Exception):
    """Base of every proxy error; `code` and `status` shape the JSON answer to the app."""

    code, status = "proxy_error", 500

    def __init__(self, message: str = "", **extra: object) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.extra = extra

    def body(self) -> dict[str, object]:
        return {"error": self.code, "message": self.message, **self.extra}


class ConfigError(ProxyError):
    """A flag or SESAME_* variable is invalid."""

    code, status = "invalid_config", 500


class BadRequest(ProxyError):
    """The app sent a request the proxy cannot parse or route."""

    code, status = "bad_request", 400


class MisdirectedRequest(ProxyError):
    """Inside an intercepted TLS connection, the request names another authority than the connection's."""

    code, status = "misdirected_request", 421


class HeadTooLarge(ProxyError):
    """The request head (request line and fields) exceeds the head size limit."""

    code, status = "request_header_too_large", 431


class URITooLong(ProxyError):
    """The request line exceeds its size limit."""

    code, status = "uri_too_long", 414


class UnsupportedTransferCoding(ProxyError):
    """A request Transfer-Encoding other than `chunked` (what nginx answers with 501)."""

    code, status = "unsupported_transfer_coding", 501


class VersionNotSupported(ProxyError):
    """An HTTP major version other than 1 on an HTTP/1.x connection."""

    code, status = "http_version_not_supported", 505


class HeaderTimeout(ProxyError):
    """The app did not finish its request head within the header timeout."""

    code, status = "request_header_timeout", 408


class InvalidCredential(ProxyError):
    """The credential holds a control character: it is never written into a request (fail closed)."""

    code, status = "invalid_credential", 502


class ClientTimeout(ProxyError):
    """The app stopped sending its request body for longer than the stream idle timeout."""

    code, status = "request_body_timeout", 408


class CredentialUnavailable(ProxyError):
    """No valid credential and none obtainable: the request is not forwarded (fail closed)."""

    code, status = "credential_unavailable", 503


class ProviderFailed(CredentialUnavailable):
    """The control plane answered that the target's credential provider failed: its code and status
    (`provider_timeout` 504, `provider_unavailable` 503) reach the app, so the right side is blamed."""

    def __init__(self, code: str, status: int, message: str = "") -> None:
        super().__init__(message or code)
        self.code, self.status = code, status


class Denied(ProxyError):
    """The control plane refused a credential (policy_denied, workload_revoked, unknown_*)."""

    status = 403

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code


class ApprovalPending(ProxyError):
    """The policy requires a human approval that has not been given yet."""

    code, status = "approval_pending", 403


class UpstreamUnreachable(ProxyError):
    """The upstream refused or dropped the connection."""

    code, status = "upstream_unreachable", 502


class UpstreamTLSError(ProxyError):
    """The upstream's TLS certificate failed verification; nothing was sent."""

    code, status = "upstream_tls_error", 502


class UpstreamProtocolError(ProxyError):
    """The upstream answered with something that is not valid HTTP/1.1."""

    code, status = "bad_upstream_response", 502


class UpstreamTimeout(ProxyError):
    """Connecting to the upstream or waiting for its response head took too long."""

    code, status = "upstream_timeout", 504
