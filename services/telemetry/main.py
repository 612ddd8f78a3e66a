"""App factory of the telemetry service: the operator API and dashboard, the ingest consumer, consumer lag."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.telemetry import lag
from services.telemetry.api import routers
from services.telemetry.config import Settings
from services.telemetry.events import Ingestor
from services.telemetry.models import SCHEMA
from shared.runtime import Runtime


@asynccontextmanager
async def telemetry_resources(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    ingestor = Ingestor(settings)
    app.state.ingestor = ingestor
    await ingestor.start()
    lag_task = asyncio.create_task(
        lag.run(settings.kafka_bootstrap_servers, settings.lag_interval_seconds), name="consumer-lag"
    )
    try:
        yield
    finally:
        lag_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag_task
        await ingestor.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    runtime = Runtime(settings or Settings(), service="telemetry", schema=SCHEMA, resources=telemetry_resources)
    return runtime.build_app(routers)
