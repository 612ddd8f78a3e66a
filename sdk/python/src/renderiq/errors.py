"""Typed exceptions: every failure the SDK raises is a ``RenderiqError``, mapped by ``errorCode`` first, then status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from renderiq.retries import parse_retry_after

if TYPE_CHECKING:
    from renderiq.models import RenderStatus


class RenderiqError(Exception):
    """Base of the SDK's errors; API refusals carry the contract's ``errorCode``, status, ``details`` and request id."""

    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        body: Any = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code or self.default_code
        self.status_code = status_code
        self.details: dict[str, Any] = details or {}
        self.request_id = request_id
        self.body = body
        self.headers = headers or httpx.Headers()

    def __str__(self) -> str:
        context = [f"HTTP {self.status_code}"] if self.status_code else []
        if self.request_id:
            context.append(f"request {self.request_id}")
        suffix = f" ({', '.join(context)})" if context else ""
        return f"{self.error_code or 'ERROR'}: {self.message}{suffix}"


class APIConnectionError(RenderiqError):
    """The gateway could not be reached, or the connection broke before an answer."""

    default_code = "CONNECTION_ERROR"


class APITimeoutError(APIConnectionError):
    default_code = "TIMEOUT"


class ValidationError(RenderiqError):
    """400: a missing or invalid field (``field`` and ``reason`` say which), a bad image, an unavailable model."""

    default_code = "INVALID_INPUT"

    @property
    def field(self) -> str | None:
        return self.details.get("field")

    @property
    def reason(self) -> str | None:
        return self.details.get("reason")


class AuthenticationError(RenderiqError):
    """401: no, invalid, expired or revoked credentials, or a wrong password."""

    default_code = "AUTH_REQUIRED"


class InsufficientCreditsError(RenderiqError):
    """402: the account cannot pay for this render."""

    default_code = "INSUFFICIENT_CREDITS"

    @property
    def required_credits(self) -> int | None:
        return _int_field(self.body, "requiredCredits")

    @property
    def available_credits(self) -> int | None:
        return _int_field(self.body, "availableCredits")


class PermissionDeniedError(RenderiqError):
    """403: the credential lacks a scope (``required_scope``), or an API key tried to manage keys."""

    default_code = "INSUFFICIENT_PERMISSIONS"

    @property
    def required_scope(self) -> str | None:
        return self.details.get("requiredScope")


class NotFoundError(RenderiqError):
    """404: missing, or owned by someone else."""

    default_code = "NOT_FOUND"


class ConflictError(RenderiqError):
    """409: already exists, or not possible in the object's current state (e.g. cancelling a finished render)."""

    default_code = "INVALID_STATE"


class IdempotencyConflictError(ConflictError):
    """The ``Idempotency-Key`` was already used for a different request body."""

    default_code = "IDEMPOTENCY_CONFLICT"


class PayloadTooLargeError(RenderiqError):
    default_code = "PAYLOAD_TOO_LARGE"


class RateLimitError(RenderiqError):
    """429 (after the retries ran out); ``retry_after`` is the server's ``Retry-After`` in seconds."""

    default_code = "RATE_LIMIT_EXCEEDED"

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers)


class ServerError(RenderiqError):
    """5xx: the platform failed; safe requests were already retried."""

    default_code = "INTERNAL_ERROR"


class ServiceUnavailableError(ServerError):
    default_code = "SERVICE_UNAVAILABLE"

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers)


class RenderTimeoutError(RenderiqError):
    """``Render.wait`` ran out of time; the render goes on (``status`` is the last one seen)."""

    default_code = "WAIT_TIMEOUT"

    def __init__(self, message: str, status: RenderStatus | None) -> None:
        super().__init__(message)
        self.status = status


class RenderNotCompletedError(RenderiqError):
    """The render has no output: it failed, was canceled or is still running (``status`` tells)."""

    def __init__(self, status: RenderStatus) -> None:
        detail = f": {status.error}" if status.error else ""
        code = status.error_code or f"RENDER_{status.status.upper()}"
        super().__init__(f"Render {status.render_id} is {status.status}{detail}", error_code=code)
        self.status = status


class WebhookVerificationError(RenderiqError):
    """A delivery's signature, timestamp or body did not verify: do not trust it."""

    default_code = "WEBHOOK_VERIFICATION_FAILED"


BY_CODE: dict[str, type[RenderiqError]] = {
    "AUTH_REQUIRED": AuthenticationError,
    "INVALID_TOKEN": AuthenticationError,
    "TOKEN_EXPIRED": AuthenticationError,
    "INVALID_API_KEY": AuthenticationError,
    "API_KEY_EXPIRED": AuthenticationError,
    "API_KEY_REVOKED": AuthenticationError,
    "INVALID_CREDENTIALS": AuthenticationError,
    "REFRESH_FAILED": AuthenticationError,
    "INSUFFICIENT_PERMISSIONS": PermissionDeniedError,
    "MISSING_REQUIRED_FIELD": ValidationError,
    "INVALID_INPUT": ValidationError,
    "INVALID_IMAGE": ValidationError,
    "MODEL_UNAVAILABLE": ValidationError,
    "NOT_FOUND": NotFoundError,
    "ALREADY_EXISTS": ConflictError,
    "IDEMPOTENCY_CONFLICT": IdempotencyConflictError,
    "INVALID_STATE": ConflictError,
    "INSUFFICIENT_CREDITS": InsufficientCreditsError,
    "PAYLOAD_TOO_LARGE": PayloadTooLargeError,
    "RATE_LIMIT_EXCEEDED": RateLimitError,
    "SERVICE_UNAVAILABLE": ServiceUnavailableError,
    "INTERNAL_ERROR": ServerError,
}

BY_STATUS: dict[int, type[RenderiqError]] = {
    400: ValidationError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_class(error_code: str | None, status_code: int) -> type[RenderiqError]:
    """The exception type of an error answer: its ``errorCode`` when known, else its HTTP status."""
    if error_code in BY_CODE:
        return BY_CODE[error_code]
    if status_code in BY_STATUS:
        return BY_STATUS[status_code]
    return ServerError if status_code >= 500 else RenderiqError


def error_from_response(response: httpx.Response) -> RenderiqError:
    """The typed exception of an error answer (the contract's envelope, or any other body)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    envelope = body if isinstance(body, dict) else {}
    code = envelope.get("errorCode") if isinstance(envelope.get("errorCode"), str) else None
    message = envelope.get("error")
    if not isinstance(message, str) or not message:
        message = response.text[:200] or response.reason_phrase or f"HTTP {response.status_code}"
    details = envelope.get("details")
    return error_class(code, response.status_code)(
        message,
        error_code=code,
        status_code=response.status_code,
        details=details if isinstance(details, dict) else {},
        request_id=response.headers.get("x-request-id"),
        body=body,
        headers=response.headers,
    )


def connection_error(exc: httpx.TransportError) -> APIConnectionError:
    """The SDK's error for a transport failure (the original is its ``__cause__`` when raised ``from`` it)."""
    kind = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
    return kind(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _int_field(body: Any, name: str) -> int | None:
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, int) else None
