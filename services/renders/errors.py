"""Domain errors of the renders service; each carries its HTTP status and the contract's ``errorCode``."""

from __future__ import annotations

from shared.errors import DomainError, NotFoundError, PayloadTooLargeError

__all__ = [
    "AlreadyExistsError",
    "DomainError",
    "IdempotencyConflictError",
    "InvalidStateError",
    "NotFoundError",
    "PayloadTooLargeError",
]


class AlreadyExistsError(DomainError):
    status_code = 409
    error_code = "ALREADY_EXISTS"


class InvalidStateError(DomainError):
    status_code = 409
    error_code = "INVALID_STATE"


class IdempotencyConflictError(DomainError):
    status_code = 409
    error_code = "IDEMPOTENCY_CONFLICT"
