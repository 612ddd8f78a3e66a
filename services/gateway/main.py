"""App factory of the gateway: a plain-ASGI fast path for routed paths in front of a small FastAPI app."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from redis.asyncio import Redis
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.api import router
from services.gateway.authn import ApiKeyVerifier, Denylist, JwtVerifier, KeyUsageRecorder
from services.gateway.config import Settings
from services.gateway.docs import PublicSpec
from services.gateway.docs import router as docs_router
from services.gateway.events import KeyEventsConsumer, backfill_deleted_users
from services.gateway.health import HealthChecker
from services.gateway.isolation import OpenSlots
from services.gateway.proxy import Upstreams
from services.gateway.ratelimit import RateLimiter
from services.gateway.request_events import RequestEventsMiddleware, RequestEventsPublisher
from services.gateway.routing import route_for
from services.gateway.service import FailureBudget, Pipeline
from services.gateway.signer import IdentitySigner, identity_signing_key
from shared.http import RequestContextMiddleware
from shared.http import create_app as create_service_app
from shared.logging import configure_logging
from shared.serve import Listeners
from shared.storage import storage_from_settings


class GatewayApp:
    """Routed paths go straight to the pipeline; health, files and unknown paths go to FastAPI."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            service = route_for(scope["path"])
            if service is not None:
                await self.app.state.pipeline.handle(scope, receive, send, service)
                return
        await self.app(scope, receive, send)


@asynccontextmanager
async def gateway_lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    upstreams = Upstreams(settings)
    session = upstreams.internal
    redis = Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
    denylist = Denylist()
    usage = KeyUsageRecorder(settings, session)
    keys = ApiKeyVerifier(settings, session, usage)
    jwt_verifier = JwtVerifier(settings, session, denylist)
    app.state.pipeline = Pipeline(
        settings,
        upstreams,
        jwt_verifier,
        keys,
        RateLimiter(redis, settings.rate_limit_window_seconds),
        IdentitySigner(
            identity_signing_key(settings.identity_private_key, settings.is_dev),
            settings.internal_identity_ttl_seconds,
        ),
        FailureBudget(settings.auth_failures_per_minute),
        OpenSlots(settings.max_requests_per_caller, "requests"),
        OpenSlots(settings.max_streams_per_caller, "event streams"),
    )
    app.state.public_spec = PublicSpec(settings.upstreams(), upstreams.internal)
    app.state.storage = storage_from_settings(settings)
    app.state.health = HealthChecker(settings, upstreams.internal, redis, app.state.storage)
    app.state.key_cache = keys
    app.state.key_events = KeyEventsConsumer(settings, keys, denylist)
    publisher = RequestEventsPublisher(settings.kafka_bootstrap_servers) if settings.request_events else None
    app.state.request_events = publisher
    tasks = [
        asyncio.create_task(app.state.key_events.run(), name="key-events"),
        asyncio.create_task(backfill_deleted_users(settings, session, denylist), name="deleted-users"),
        asyncio.create_task(usage.run(), name="key-usage"),
        asyncio.create_task(jwt_verifier.run_refresh(), name="jwks-refresh"),
    ]
    if publisher is not None:
        tasks.append(asyncio.create_task(publisher.run(), name="request-events"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await app.state.key_events.stop()
        await usage.flush()
        if publisher is not None:
            await publisher.close()
        await upstreams.close()
        await redis.aclose()


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The public application (what tests mount in-process); ``create_listeners`` adds the internal one."""
    return create_listeners(settings).public


def create_listeners(settings: Settings | None = None) -> Listeners:
    """The public API, and apart from it the internal listener of probes and metrics (never routed publicly)."""
    settings = settings or Settings()
    configure_logging("gateway", json_logs=not settings.is_dev, level=settings.log_level)

    started = time.monotonic()

    async def readiness() -> dict[str, Any]:
        """Ready once revocations reach this replica; a broker outage later does not take the gateway out of
        service (the outbox keeps the events), and neither does one at start-up beyond a grace period."""
        consumer: KeyEventsConsumer | None = getattr(app.state, "key_events", None)
        listening = consumer is not None and consumer.ready.is_set()
        grace_over = time.monotonic() - started > settings.key_events_ready_grace_seconds
        return {"keyEvents": "ok" if listening or grace_over else "waiting"}

    app = create_service_app(
        "gateway",
        settings=settings,
        lifespan=gateway_lifespan,
        readiness=readiness,
        routers=[router, docs_router],
        internal_routes=False,
        health_routes=False,
    )
    internal = create_service_app(
        "gateway", settings=settings, lifespan=None, readiness=readiness, routers=[], internal_routes=False
    )
    events = RequestEventsMiddleware(GatewayApp(app), lambda: getattr(app.state, "request_events", None))
    return Listeners(public=RequestContextMiddleware(events, service="gateway"), internal=internal)
