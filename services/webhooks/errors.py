"""Domain errors of the webhooks service; each carries its HTTP status and the contract's ``errorCode``."""

from __future__ import annotations

from shared.errors import AuthRequiredError, DomainError, NotFoundError, RateLimitedError

__all__ = [
    "AuthRequiredError",
    "DomainError",
    "InvalidInputError",
    "InvalidStateError",
    "NotFoundError",
    "RateLimitedError",
    "WebhookExistsError",
]


class InvalidInputError(DomainError):
    """400 ``INVALID_INPUT`` naming the field and why (a refused URL, an unknown event, a malformed secret)."""

    status_code = 400
    error_code = "INVALID_INPUT"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"Invalid {field}: {reason}", details={"field": field, "reason": reason})


class InvalidStateError(DomainError):
    status_code = 409
    error_code = "INVALID_STATE"


class WebhookExistsError(DomainError):
    status_code = 409
    error_code = "ALREADY_EXISTS"

    def __init__(self) -> None:
        super().__init__("A webhook with this URL is already registered", details={"field": "url"})
