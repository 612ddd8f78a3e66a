"""Domain errors of the credits service; each carries its HTTP status and the contract's ``errorCode``."""

from __future__ import annotations

from shared.cursor import InvalidCursorError
from shared.errors import AuthRequiredError, DomainError, NotFoundError

__all__ = [
    "AuthRequiredError",
    "DomainError",
    "IdempotencyConflictError",
    "InsufficientCreditsError",
    "InvalidCursorError",
    "NotFoundError",
]


class InsufficientCreditsError(DomainError):
    """402 with the contract's top-level ``requiredCredits`` and ``availableCredits``."""

    status_code = 402
    error_code = "INSUFFICIENT_CREDITS"

    def __init__(self, required: int, available: int) -> None:
        super().__init__(
            f"Insufficient credits: {required} required, {available} available",
            extra={"requiredCredits": required, "availableCredits": available},
        )


class IdempotencyConflictError(DomainError):
    """A reference already used for a different operation (another user or another amount)."""

    status_code = 409
    error_code = "IDEMPOTENCY_CONFLICT"

    def __init__(self, kind: str, reference: str) -> None:
        super().__init__(
            f"This {kind} reference was already used with different parameters",
            details={"field": "renderId" if kind == "reserve" else "reference", "reference": reference},
        )
