"""App factory of the credits service: its HTTP API and its ``render.events`` consumer in one process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from services.credits import sweeper
from services.credits.api import routers
from services.credits.config import Settings
from services.credits.events import wire
from services.credits.models import SCHEMA
from shared.internal_client import InternalClient
from shared.runtime import Runtime


@asynccontextmanager
async def credits_resources(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    renders = InternalClient(settings.renders_url, caller="credits", secret=settings.internal_identity_secret)
    task = asyncio.create_task(
        sweeper.run(
            app.state.runtime.sessions,
            renders,
            settings.orphan_reservation_seconds,
            settings.orphan_sweep_interval_seconds,
        ),
        name="orphan-reservations",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await renders.aclose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = Runtime(
        settings,
        service="credits",
        schema=SCHEMA,
        subscribers=partial(wire, group=settings.consumer_group),
        resources=credits_resources,
    )
    return runtime.build_app(routers)
