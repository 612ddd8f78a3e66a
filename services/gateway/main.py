"""App factory of the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from redis.asyncio import Redis

from services.gateway.api import router
from services.gateway.config import Settings
from services.gateway.health import HealthChecker
from services.gateway.service import make_client
from shared.http import create_app as create_service_app
from shared.logging import configure_logging
from shared.storage import make_storage


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging("gateway", json_logs=not settings.is_dev, level=settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.http = make_client(settings)
        app.state.redis = Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
        app.state.storage = make_storage(
            settings.storage_backend,
            storage_dir=settings.storage_dir,
            public_base_url=settings.public_base_url,
            signing_secret=settings.storage_signing_secret,
        )
        app.state.health = HealthChecker(settings, app.state.http, app.state.redis, app.state.storage)
        try:
            yield
        finally:
            await app.state.http.aclose()
            await app.state.redis.aclose()

    async def readiness() -> dict[str, Any]:
        return {"process": "ok"}

    return create_service_app(
        "gateway", settings=settings, lifespan=lifespan, readiness=readiness, routers=[router], internal_routes=False
    )
