"""Domain errors of the gateway: the contract's authentication, permission and availability refusals."""

from __future__ import annotations

from shared.errors import DomainError, PayloadTooLargeError, RateLimitedError, ServiceUnavailableError

__all__ = [
    "ApiKeyExpiredError",
    "ApiKeyRevokedError",
    "AuthRequiredError",
    "ClientGoneError",
    "InsufficientPermissionsError",
    "InvalidApiKeyError",
    "InvalidTokenError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RequestTimeoutError",
    "TokenExpiredError",
    "UpstreamUnavailableError",
]


class UpstreamUnavailableError(ServiceUnavailableError):
    """The owning service did not answer; the caller may retry (nothing was changed by the gateway)."""

    def __init__(self, service: str) -> None:
        super().__init__("The service is temporarily unavailable, retry shortly", details={"service": service})


class _Unauthorized(DomainError):
    status_code = 401
    message = "Unauthorized"

    def __init__(self) -> None:
        super().__init__(self.message)


class AuthRequiredError(_Unauthorized):
    error_code = "AUTH_REQUIRED"
    message = "Authentication required: send a Bearer token or an X-Api-Key"


class InvalidTokenError(_Unauthorized):
    error_code = "INVALID_TOKEN"
    message = "Invalid access token"


class TokenExpiredError(_Unauthorized):
    error_code = "TOKEN_EXPIRED"
    message = "Access token expired; refresh it"


class InvalidApiKeyError(_Unauthorized):
    error_code = "INVALID_API_KEY"
    message = "Invalid API key"


class ApiKeyExpiredError(_Unauthorized):
    error_code = "API_KEY_EXPIRED"
    message = "This API key has expired"


class ApiKeyRevokedError(_Unauthorized):
    error_code = "API_KEY_REVOKED"
    message = "This API key has been revoked"


class InsufficientPermissionsError(DomainError):
    status_code = 403
    error_code = "INSUFFICIENT_PERMISSIONS"

    def __init__(self, required: str, reason: str | None = None) -> None:
        details = {"requiredScope": required}
        if reason:
            details["reason"] = reason
        super().__init__(reason or f"This credential lacks the {required} scope", details=details)


class RequestTimeoutError(DomainError):
    """A body that did not arrive in time: answered, then the connection is closed (it cannot be reused)."""

    status_code = 408
    error_code = "REQUEST_TIMEOUT"

    def __init__(self, message: str, *, details: dict[str, object] | None = None) -> None:
        super().__init__(message, details=details, headers={"Connection": "close"})


class ClientGoneError(Exception):
    """The client disconnected before its request was complete: there is nobody left to answer."""
