"""``gateway.requests``: one event per public request, for telemetry, published in batches off the request path.

The middleware only appends a small tuple to an in-memory queue when the response is done; a background task turns
the queue into CloudEvents and hands them to one Kafka producer (which batches them on the wire). Telemetry is not
business state: when Kafka is away the queue is bounded and the oldest requests beyond it are dropped and counted
(``plugin_gateway_request_events_dropped_total``), never the request itself delayed or failed.

Each recorded request has one event id, derived from its request id and the time it was recorded, so a batch sent
again after a partial failure carries the same ids and telemetry (which dedupes by event id) counts it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.platform import PluginIdentity, detect_plugin
from shared.events.envelope import CloudEvent
from shared.events.topics import GATEWAY_REQUESTS
from shared.kafka import start_producer, stop_producer

log = structlog.stdlib.get_logger(__name__)

DROPPED = Counter("plugin_gateway_request_events_dropped_total", "Request events not published (queue full)")
PUBLISHED = Counter("plugin_gateway_request_events_total", "Request events published")

STATIC_SEGMENTS = frozenset(
    {
        "api", "plugins", "admin", "auth", "signup", "signin", "refresh", "signout", "me", "keys", "renders",
        "events", "projects", "credits", "transactions", "webhooks", "register", "test", "enable", "deliveries",
        "resend", "callback-secret", "health", "telemetry", "summary", "timeseries", ".well-known", "jwks.json",
        "files",
    }
)  # fmt: skip
"""Every literal segment of the public API; any other segment is an id and becomes ``{id}``."""
_ERROR_CODE = re.compile(rb'"errorCode"\s*:\s*"([A-Z_]{1,40})"')
EVENT_ID_NAMESPACE = uuid.UUID("5b0f6c8e-2d3a-4c1e-9f7b-8a6d4e2c1b09")
"""uuid5 namespace of ``gateway.request`` event ids."""


def route_template(path: str) -> str:
    """``/api/plugins/renders/3f2a.../events`` → ``/api/plugins/renders/{id}/events``: bounded label values."""
    if path.startswith("/files/"):
        return "/files/{key}"
    return "/".join(s if not s or s in STATIC_SEGMENTS else "{id}" for s in path.split("/")[:8])


class RequestEventsPublisher:
    """A bounded queue of finished requests and the task that publishes them."""

    def __init__(self, bootstrap_servers: str, *, max_queue: int = 50_000, batch: int = 1000) -> None:
        self.bootstrap = bootstrap_servers
        self.batch = batch
        self._queue: deque[tuple[Any, ...]] = deque(maxlen=max_queue)
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None

    def record(
        self,
        request_id: str,
        method: str,
        route: str,
        status: int,
        duration_ms: float,
        plugin: PluginIdentity,
        user_id: str | None,
        error_code: str | None,
    ) -> None:
        if len(self._queue) == self._queue.maxlen:
            DROPPED.inc()
        # The record time (ns) is taken once here: with the request id it makes the event id (see ``event_id``).
        self._queue.append(
            (request_id, method, route, status, duration_ms, plugin, user_id, error_code, time.time_ns())
        )
        if len(self._queue) >= self.batch:
            self._wake.set()

    async def run(self, linger_seconds: float = 0.2) -> None:
        backoff = 0.5
        while True:
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), linger_seconds)
                self._wake.clear()
                await self.publish_queued()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("request_events_retry", error=f"{type(exc).__name__}: {exc}", retry_in=backoff)
                await self._close_producer()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)

    async def publish_queued(self) -> int:
        """Send everything queued now; an item leaves the queue only once Kafka acknowledged it."""
        if not self._queue:
            return 0
        if self._producer is None:
            self._producer = await start_producer(self.bootstrap, client_id="gateway-requests")
        sent = 0
        while self._queue:
            items = [self._queue[i] for i in range(min(self.batch, len(self._queue)))]
            futures = []
            for item in items:
                event = _event(item)
                futures.append(
                    await self._producer.send(
                        GATEWAY_REQUESTS,
                        value=event.kafka_value(),
                        key=event.kafka_key(),
                        headers=event.kafka_headers(),
                    )
                )
            await asyncio.gather(*futures)
            for _ in items:
                self._queue.popleft()
            sent += len(items)
            PUBLISHED.inc(len(items))
        return sent

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.publish_queued(), 2)
        await self._close_producer()

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        await stop_producer(producer)


def event_id(request_id: str, recorded_ns: int) -> str:
    """The event id of one recorded request: the same on every send of it, different for another request.

    Not the request id alone: a client may send its own ``X-Request-Id`` and reuse it, and each request counts.
    """
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{request_id}\n{recorded_ns}"))


def _event(item: tuple[Any, ...]) -> CloudEvent:
    request_id, method, route, status, duration_ms, plugin, user_id, error_code, recorded_ns = item
    data: dict[str, Any] = {
        "requestId": request_id,
        "method": method,
        "route": route,
        "status": status,
        "durationMs": round(duration_ms, 3),
        "platform": plugin.platform,
    }
    if plugin.version:
        data["pluginVersion"] = plugin.version
    if user_id:
        data["userId"] = user_id
    if error_code:
        data["errorCode"] = error_code
    return CloudEvent(
        id=event_id(request_id, recorded_ns),
        source="/services/gateway",
        type="gateway.request",
        subject=request_id,
        time=datetime.fromtimestamp(recorded_ns / 1e9, UTC),
        data=data,
    )


class RequestEventsMiddleware:
    """Records every HTTP request once its response is sent (status, duration, error code, caller, plugin)."""

    def __init__(self, app: ASGIApp, publisher: Callable[[], RequestEventsPublisher | None]) -> None:
        self.app = app
        self.publisher = publisher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        error_code: str | None = None

        async def capture(message: Message) -> None:
            nonlocal status, error_code
            if message["type"] == "http.response.start":
                status = message["status"]
            elif status >= 400 and error_code is None and message["type"] == "http.response.body":
                match = _ERROR_CODE.search(message.get("body", b"")[:4096])
                error_code = match.group(1).decode() if match else ""
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            publisher = self.publisher()
            if publisher is not None:
                state = scope.get("state", {})
                plugin = state.get("plugin") or detect_plugin(Headers(scope=scope))
                publisher.record(
                    state.get("request_id", ""),
                    scope["method"],
                    route_template(scope["path"]),
                    status or 500,
                    (time.perf_counter() - started) * 1000,
                    plugin,
                    state.get("user_id"),
                    error_code or None,
                )
