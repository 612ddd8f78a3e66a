"""Domain errors of the telemetry service; each carries its HTTP status and the contract's ``errorCode``."""

from __future__ import annotations

from shared.errors import DomainError, NotFoundError

__all__ = ["DomainError", "InvalidWindowError", "NotFoundError", "OperatorRequiredError"]


class OperatorRequiredError(DomainError):
    status_code = 403
    error_code = "INSUFFICIENT_PERMISSIONS"

    def __init__(self) -> None:
        super().__init__("Operator access token required", details={"requiredScope": "operator"})


class InvalidWindowError(DomainError):
    status_code = 400
    error_code = "INVALID_INPUT"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"Invalid {field}: {reason}", details={"field": field, "reason": reason})
