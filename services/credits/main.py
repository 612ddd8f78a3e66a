"""App factory of the credits service: its HTTP API, its ``render.events`` consumer and its reconciler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from services.credits.api import routers
from services.credits.config import Settings
from services.credits.events import consumers
from services.credits.models import SCHEMA, processed_events
from services.credits.reconciler import Reconciler
from shared.consumer import forget_processed
from shared.internal_client import RendersClient
from shared.retention import Purge
from shared.runtime import Runtime


@asynccontextmanager
async def credits_resources(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    renders = RendersClient(settings.renders_url, caller="credits", settings=settings)
    reconciler = Reconciler(
        app.state.runtime.sessions, renders, settings.reconcile_after_seconds, settings.reconcile_page_size
    )
    app.state.reconciler = reconciler
    task = asyncio.create_task(reconciler.run(settings.reconcile_interval_seconds), name="credits-reconciler")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await renders.aclose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    async def forget_old_events(session: AsyncSession) -> int:
        return await forget_processed(session, processed_events, settings.processed_events_retention_seconds)

    runtime = Runtime(
        settings,
        service="credits",
        schema=SCHEMA,
        consumers=partial(consumers, settings),
        resources=credits_resources,
        purges=[Purge("processed_events", forget_old_events)],
    )
    return runtime.build_app(routers)
