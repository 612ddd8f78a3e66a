"""Domain errors of the auth service; each carries its HTTP status and the contract's ``errorCode``."""

from __future__ import annotations

from shared.errors import AuthRequiredError, DomainError, NotFoundError, RateLimitedError

__all__ = [
    "AlreadyExistsError",
    "AuthRequiredError",
    "BearerRequiredError",
    "InvalidCredentialsError",
    "InvalidTokenError",
    "NotFoundError",
    "RefreshFailedError",
    "SigninLockedError",
    "TooManyKeysError",
]


class AlreadyExistsError(DomainError):
    status_code = 409
    error_code = "ALREADY_EXISTS"


class InvalidCredentialsError(DomainError):
    status_code = 401
    error_code = "INVALID_CREDENTIALS"

    def __init__(self) -> None:
        super().__init__("Invalid email or password")


class RefreshFailedError(DomainError):
    status_code = 401
    error_code = "REFRESH_FAILED"

    def __init__(self) -> None:
        super().__init__("Refresh token is invalid, expired or already used; sign in again")


class InvalidTokenError(DomainError):
    status_code = 401
    error_code = "INVALID_TOKEN"


class BearerRequiredError(DomainError):
    """API keys carry plugin scopes only; managing keys needs the account itself (a Bearer token)."""

    status_code = 403
    error_code = "INSUFFICIENT_PERMISSIONS"

    def __init__(self) -> None:
        super().__init__(
            "API keys cannot manage API keys; use a Bearer access token",
            details={"requiredScope": "keys:manage", "reason": "bearer token required"},
        )


class ApiKeyRefusedError(DomainError):
    """Verification outcome for the gateway: unknown, revoked or expired key."""

    status_code = 401


class SigninLockedError(RateLimitedError):
    """Too many failed sign-ins on this address (``services.auth.lockout``); the password was not checked."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many failed sign-ins for this account; retry later", retry_after=retry_after)


class TooManyKeysError(DomainError):
    """The account already holds ``AUTH_MAX_API_KEYS_PER_USER`` active keys: a state the caller can change (revoke
    one), not bad input and not something waiting fixes, hence 409 ``INVALID_STATE``."""

    status_code = 409
    error_code = "INVALID_STATE"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This account already has {limit} active API keys; revoke one before creating another",
            details={"limit": limit, "reason": "too many active API keys"},
        )
