"""What every HTTP app shares: request ids, the error envelope, health and metrics routes."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import PayloadTooLargeError, error_body, install_error_handlers, unexpected_error_response
from shared.identity import ServiceIdentityDep
from shared.openapi import openapi_router
from shared.responses import JsonResponse
from shared.settings import ServiceSettings

REQUEST_ID_HEADER = b"x-request-id"
HTTP_REQUESTS = Counter("plugin_http_requests_total", "HTTP requests served", ["service", "method", "status"])
HTTP_LATENCY = Histogram(
    "plugin_http_request_duration_seconds",
    "HTTP request latency",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

ReadinessCheck = Callable[[], Awaitable[dict[str, Any]]]


def new_request_id() -> str:
    return uuid.uuid4().hex


def _valid_request_id(value: bytes) -> str | None:
    """Accept a caller's id only when it is short and printable, so it is safe in logs and headers."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    if 0 < len(text) <= 128 and all(c.isalnum() or c in "-_.:" for c in text):
        return text
    return None


class RequestContextMiddleware:
    """Pure ASGI middleware: binds ``request_id`` to every log line and echoes ``X-Request-Id``."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if "request_id" in state:  # an outer instance already did the work (the gateway wraps its FastAPI app)
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                request_id = _valid_request_id(value)
                break
        request_id = request_id or new_request_id()
        state["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(service=self.service, request_id=request_id)
        started = time.perf_counter()
        status_holder = [500]
        header_value = request_id.encode()
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder[0] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, header_value))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Answered here rather than by Starlette's catch-all, which re-raises after answering: uvicorn then
            # closes the connection under the answer, and a caller on a pooled connection (the gateway) sees a
            # broken upstream instead of this 500.
            if response_started:
                raise
            await unexpected_error_response(exc, scope["path"], request_id)(scope, receive, send_with_id)
        finally:
            HTTP_REQUESTS.labels(self.service, scope["method"], str(status_holder[0])).inc()
            HTTP_LATENCY.labels(self.service).observe(time.perf_counter() - started)


MAX_BODY_BYTES = 1024 * 1024
"""Any request body a service reads, unless its app raises the limit for a route (``app.state.body_limits``)."""


class BodyLimitMiddleware:
    """Every body is counted as it arrives, chunked or not: past the limit the answer is 413 and nothing more of it
    is read, whatever the route was doing with it (a framework may wrap the refusal; the answer stays 413).

    Limits: ``app.state.body_limits`` maps ``(method, path)`` to a route's own limit; any other request has
    ``MAX_BODY_BYTES``. A declared ``Content-Length`` over the limit is refused before a byte is read.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = getattr(scope.get("app"), "state", None)
        overrides: dict[tuple[str, str], int] = getattr(state, "body_limits", None) or {}
        limit = overrides.get((scope["method"], scope["path"]), MAX_BODY_BYTES)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _too_large(limit)(scope, receive, send)
                return
        received = 0
        exceeded = False
        answered = False

        async def counted() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise PayloadTooLargeError(f"Request body over {limit} bytes", details={"limit": limit})
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise PayloadTooLargeError(f"Request body over {limit} bytes", details={"limit": limit})
            return message

        async def guarded(message: Message) -> None:
            nonlocal answered
            if exceeded:
                if not answered:  # whatever the app made of the refusal, the caller learns the truth
                    answered = True
                    await _too_large(limit)(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except PayloadTooLargeError:
            if answered:
                raise
            answered = True
            await _too_large(limit)(scope, receive, send)


LINGER_SECONDS = 2.0
LINGER_BYTES = 8 * 1024 * 1024


async def refuse_unread_body(
    receive: Receive, send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """Answer a request whose body will not be read, then close its connection, lingering like nginx does.

    Closing a socket with unread bytes in it makes the kernel send a reset, which can destroy the answer before
    the client reads it: the client sees a broken connection instead of the 413. So the answer goes out whole,
    then what the client still sends is read and dropped for up to ``LINGER_SECONDS`` / ``LINGER_BYTES``
    (enough for it to see the answer and stop), and only then does the response end and the connection close.
    """
    headers = [(k, v) for k, v in headers if k.lower() not in (b"connection", b"content-length")]
    headers += [(b"connection", b"close"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": True})
    drained = 0
    deadline = time.monotonic() + LINGER_SECONDS
    with contextlib.suppress(TimeoutError):
        while drained < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
            message = await asyncio.wait_for(receive(), timeout=left)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
            drained += len(message.get("body", b""))
    await send({"type": "http.response.body", "body": b""})


def _too_large(limit: int) -> ASGIApp:
    payload = orjson.dumps(error_body(f"Request body over {limit} bytes", "PAYLOAD_TOO_LARGE", {"limit": limit}))

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        await refuse_unread_body(receive, send, 413, [(b"content-type", b"application/json")], payload)

    return answer


def health_router(readiness: ReadinessCheck) -> APIRouter:
    """``/health/live`` (process is up), ``/health/ready`` (its dependencies answer) and ``/metrics``."""
    router = APIRouter(include_in_schema=False)

    @router.get("/health/live")
    async def live() -> JsonResponse:
        return JsonResponse({"status": "ok"})

    @router.get("/health/ready")
    async def ready() -> JsonResponse:
        checks = await readiness()
        ok = all(v == "ok" for v in checks.values())
        return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def internal_router() -> APIRouter:
    """``/internal/whoami``: the service credential a service received, as it verified it (diagnostics, tests);
    never routed by the gateway. A user identity is refused here as on every ``/internal`` route."""
    router = APIRouter(include_in_schema=False)

    @router.get("/internal/whoami")
    async def whoami(identity: ServiceIdentityDep) -> JsonResponse:
        return JsonResponse({"success": True, "data": identity.model_dump()})

    return router


def create_app(
    service: str,
    *,
    settings: ServiceSettings,
    lifespan: Any,
    readiness: ReadinessCheck,
    routers: list[APIRouter],
    title: str | None = None,
    internal_routes: bool = True,
    health_routes: bool = True,
) -> FastAPI:
    """The one app factory every service uses, so all of them answer errors and health the same way."""
    app = FastAPI(
        title=title or service,
        lifespan=lifespan,
        default_response_class=JsonResponse,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,  # a redirect would carry this service's internal address to the client
    )
    app.state.settings = settings
    install_error_handlers(app)
    if health_routes:  # off on a public listener: probes and metrics are served apart (the gateway)
        app.include_router(health_router(readiness))
    if internal_routes:
        app.include_router(internal_router())
        app.include_router(openapi_router(service, routers))
    app.state.api_routers = routers
    for router in routers:
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestContextMiddleware, service=service)
    return app
