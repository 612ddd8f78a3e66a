"""Errors of the rendering package: refusals of the caller's input, and failures of a render itself."""

from __future__ import annotations

from typing import Any

from shared.errors import DomainError


class InvalidImageError(DomainError):
    """The upload is not an image we can render from (400 ``INVALID_IMAGE``, ``details.reason`` says why)."""

    status_code = 400
    error_code = "INVALID_IMAGE"

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or f"Invalid image: {reason}", details={"reason": reason})
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised inside pool processes: must survive the pickle round trip back to the event loop.
        return (type(self), (self.reason, self.message))


class ModelUnavailableError(DomainError):
    """The requested model is unknown or not configured here; never silently replaced by another one."""

    status_code = 400
    error_code = "MODEL_UNAVAILABLE"

    def __init__(self, model: str, available: list[str]) -> None:
        super().__init__(
            f"Model '{model}' is not available; available: {', '.join(available)}",
            details={"model": model, "available": list(available)},
        )
        self.model = model
        self.available = list(available)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.model, self.available))


class RenderFailure(Exception):
    """A render that cannot succeed (``retryable=False``) or may succeed if tried again (``retryable=True``).

    ``error_code`` is what the render's status reports (``errorCode``); the message is safe to show the user
    and never contains credentials or image data.
    """

    def __init__(self, message: str, *, error_code: str, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.retryable = retryable

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_failure, (self.message, self.error_code, self.retryable))

    def __repr__(self) -> str:
        return f"RenderFailure({self.message!r}, error_code={self.error_code!r}, retryable={self.retryable})"


def _rebuild_failure(message: str, error_code: str, retryable: bool) -> RenderFailure:
    return RenderFailure(message, error_code=error_code, retryable=retryable)
