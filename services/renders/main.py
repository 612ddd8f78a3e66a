"""App factory of the renders API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.renders.api import router
from services.renders.config import Settings
from services.renders.models import SCHEMA
from services.renders.rendering import RendererRegistry
from services.renders.service import RendersContext
from services.renders.sse import StatusHub
from services.renders.uploads import body_limit
from shared.internal_client import InternalClient
from shared.runtime import Runtime
from shared.storage import storage_from_settings


def build_registry(settings: Settings) -> RendererRegistry:
    return RendererRegistry(
        default_model=settings.default_model,
        gemini_api_key=settings.gemini_api_key,
        gemini_base_url=settings.gemini_base_url,
        gemini_models=tuple(m.strip() for m in settings.gemini_models.split(",") if m.strip()),
        gemini_timeout_seconds=settings.gemini_timeout_seconds,
        workers=settings.renderer_processes,
        png_compress_level=settings.png_compress_level,
    )


@asynccontextmanager
async def renders_resources(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    context = RendersContext(
        settings=settings,
        storage=storage_from_settings(settings),
        registry=build_registry(settings),
        credits=InternalClient(settings.credits_url, caller="renders", callee="credits", settings=settings),
    )
    app.state.renders = context
    app.state.upload_slots = asyncio.Semaphore(settings.max_concurrent_uploads)
    app.state.body_limits = {("POST", "/api/plugins/renders"): body_limit(settings.max_upload_bytes)}
    app.state.status_hub = StatusHub(settings.database_url)
    await app.state.status_hub.start()
    try:
        yield
    finally:
        await app.state.status_hub.stop()
        await context.credits.aclose()
        await context.registry.aclose()


def create_app(settings: Settings | None = None) -> FastAPI:
    runtime = Runtime(
        settings or Settings(), service="renders", schema=SCHEMA, outbox=True, resources=renders_resources
    )
    return runtime.build_app([router])
