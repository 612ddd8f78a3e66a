"""The contract's error envelope and the handlers that produce it in every app (gateway and services)."""

from __future__ import annotations

import math
from typing import Any, Literal

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.responses import JsonResponse

log = structlog.stdlib.get_logger(__name__)

ErrorCode = Literal[
    "AUTH_REQUIRED",
    "INVALID_TOKEN",
    "TOKEN_EXPIRED",
    "INVALID_API_KEY",
    "API_KEY_EXPIRED",
    "API_KEY_REVOKED",
    "INVALID_CREDENTIALS",
    "REFRESH_FAILED",
    "INSUFFICIENT_PERMISSIONS",
    "MISSING_REQUIRED_FIELD",
    "INVALID_INPUT",
    "INVALID_IMAGE",
    "MODEL_UNAVAILABLE",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "IDEMPOTENCY_CONFLICT",
    "INVALID_STATE",
    "INSUFFICIENT_CREDITS",
    "PAYLOAD_TOO_LARGE",
    "RATE_LIMIT_EXCEEDED",
    "SERVICE_UNAVAILABLE",
    "INTERNAL_ERROR",
]


class ErrorResponse(BaseModel):
    """The contract's error envelope; some codes add fields next to ``details`` (402: requiredCredits, ...)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "success": False,
                    "error": "email is required",
                    "errorCode": "MISSING_REQUIRED_FIELD",
                    "details": {"field": "email"},
                }
            ]
        },
    )

    success: Literal[False] = False
    error: str = Field(description="A human-readable message; never a stack trace.")
    errorCode: ErrorCode = Field(description="Stable machine-readable code; branch on this, not on `error`.")
    details: dict[str, Any] = Field(
        default_factory=dict, description="`field`/`reason` for 400s, `requiredScope` for 403s."
    )


class DomainError(Exception):
    """A refusal the caller can act on: carries its HTTP status and the contract's ``errorCode``."""

    status_code: int = 400
    error_code: str = "INVALID_INPUT"

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        status_code: int | None = None,
        error_code: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.extra = extra or {}
        self.headers = headers or {}
        if status_code is not None:
            self.status_code = status_code
        if error_code is not None:
            self.error_code = error_code


class NotFoundError(DomainError):
    status_code = 404
    error_code = "NOT_FOUND"


class AuthRequiredError(DomainError):
    status_code = 401
    error_code = "AUTH_REQUIRED"


class ServiceUnavailableError(DomainError):
    status_code = 503
    error_code = "SERVICE_UNAVAILABLE"
    transient: bool = True
    """Whether trying again later may work (``shared.faults``); False for another service's refusal."""


class PayloadTooLargeError(DomainError):
    status_code = 413
    error_code = "PAYLOAD_TOO_LARGE"


class RateLimitedError(DomainError):
    """429 ``RATE_LIMIT_EXCEEDED`` with ``Retry-After``: whole seconds, at least 1, so waiting that long works."""

    status_code = 429
    error_code = "RATE_LIMIT_EXCEEDED"

    def __init__(self, message: str, *, retry_after: float, details: dict[str, Any] | None = None) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            message, details={**(details or {}), "retryAfter": seconds}, headers={"Retry-After": str(seconds)}
        )


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid input: `MISSING_REQUIRED_FIELD`, `INVALID_INPUT`, `INVALID_IMAGE` or `MODEL_UNAVAILABLE`",
    401: "No, bad or expired credentials",
    402: "Not enough credits (`INSUFFICIENT_CREDITS`, with `requiredCredits` and `availableCredits`)",
    403: "The credentials lack a scope (`INSUFFICIENT_PERMISSIONS`, `details.requiredScope`) or the caller's role",
    404: "No such object, or another account's (`NOT_FOUND`)",
    409: "Conflicts with the current state: `ALREADY_EXISTS`, `IDEMPOTENCY_CONFLICT` or `INVALID_STATE`",
    413: "The body is over the upload limit (`PAYLOAD_TOO_LARGE`)",
    429: "Rate limited (`RATE_LIMIT_EXCEEDED`); `Retry-After` says when to try again",
    503: "A dependency is unavailable (`SERVICE_UNAVAILABLE`); safe to retry after `Retry-After` if given",
}


def documented_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's own refusals for its OpenAPI ``responses`` (the gateway adds the ones every route shares)."""
    return {status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}


def error_body(message: str, code: str, details: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"success": False, "error": message, "errorCode": code, "details": details or {}, **extra}


def error_response(
    status: int,
    message: str,
    code: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JsonResponse:
    return JsonResponse(error_body(message, code, details, **extra), status_code=status, headers=headers)


def _request_id(request: Request) -> str | None:
    rid = structlog.contextvars.get_contextvars().get("request_id")
    return rid if isinstance(rid, str) else request.headers.get("x-request-id")


async def _domain_error(_: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, DomainError)
    return error_response(exc.status_code, exc.message, exc.error_code, exc.details, exc.headers, **exc.extra)


def _field_of(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "body"


async def _validation_error(_: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid input", "type": "value_error"}
    field = _field_of(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return error_response(
            400, "Malformed JSON body", "INVALID_INPUT", {"field": "body", "reason": "malformed JSON"}
        )
    if first.get("type") == "missing":
        return error_response(400, f"{field} is required", "MISSING_REQUIRED_FIELD", {"field": field})
    reason = str(first.get("msg", "invalid value"))
    return error_response(400, f"Invalid {field}: {reason}", "INVALID_INPUT", {"field": field, "reason": reason})


async def _http_error(_: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 404:
        return error_response(404, "Not found", "NOT_FOUND", headers=headers)
    if exc.status_code == 405:
        return error_response(405, "Method not allowed", "INVALID_INPUT", {"reason": "method"}, headers)
    if exc.status_code == 413:
        return error_response(413, "Payload too large", "PAYLOAD_TOO_LARGE", headers=headers)
    if exc.status_code == 401:
        return error_response(401, str(exc.detail), "AUTH_REQUIRED", headers=headers)
    if exc.status_code >= 500:
        return error_response(exc.status_code, "Service unavailable", "SERVICE_UNAVAILABLE", headers=headers)
    return error_response(exc.status_code, str(exc.detail), "INVALID_INPUT", headers=headers)


BAD_TEXT_SQLSTATES = frozenset({"22021", "22P05"})  # character_not_in_repertoire, untranslatable_character
CONFLICT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})  # serialization_failure, deadlock, lock_not_available
CONFLICT_RETRY_AFTER_SECONDS = 1


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error. The driver's error can sit a few links down (SQLAlchemy's ``orig``, then
    the adapter's ``__cause__``)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def unexpected_error_response(exc: BaseException, path: str, request_id: str | None) -> JsonResponse:
    """A 500 in the envelope with the request id to quote (the details go to the log only); a 400 when the
    database refused the caller's text (e.g. a NUL character: the caller's input, not our failure); a 503 with
    ``Retry-After`` when concurrent requests collided in the database (a deadlock or serialization failure, rolled
    back whole, that the same request made again will pass)."""
    state = _sqlstate(exc)
    if state in BAD_TEXT_SQLSTATES:
        return error_response(
            400, "Text contains characters that cannot be stored", "INVALID_INPUT", {"reason": "text"}
        )
    if state in CONFLICT_SQLSTATES:
        log.warning("database_conflict", sqlstate=state, path=path, error_type=type(exc).__name__)
        retry = {"Retry-After": str(CONFLICT_RETRY_AFTER_SECONDS)}
        return error_response(503, "Concurrent update; try again", "SERVICE_UNAVAILABLE", headers=retry)
    log.error("unhandled_exception", error_type=type(exc).__name__, path=path, exc_info=exc)
    headers = {"X-Request-Id": request_id} if request_id else None
    return error_response(500, "Internal error", "INTERNAL_ERROR", {"requestId": request_id}, headers)


async def _unexpected_error(request: Request, exc: Exception) -> JsonResponse:
    return unexpected_error_response(exc, request.url.path, _request_id(request))


def install_error_handlers(app: FastAPI) -> None:
    """One place renders every error of an app in the contract's envelope."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
