"""``python -m services.webhooks.dispatcher``: the webhook dispatcher process.

One process does two jobs, each scaling with the number of processes: the ``render.events`` consumer (group
``webhooks``) writes one delivery row per target, and the delivery engine works the ``deliveries`` table (shared
with every other dispatcher through ``SKIP LOCKED``). Its outbox relay publishes delivery outcomes on
``webhook.events``. Health and metrics are served on ``WEBHOOKS_DISPATCHER_PORT``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from services.webhooks.config import Settings
from services.webhooks.delivery import Dispatcher
from services.webhooks.events import consumers
from services.webhooks.models import SCHEMA
from shared.runtime import Runtime
from shared.serve import serve


@asynccontextmanager
async def dispatcher_resources(app: FastAPI) -> AsyncIterator[None]:
    dispatcher = Dispatcher(app.state.settings)
    app.state.dispatcher = dispatcher
    await dispatcher.start()
    try:
        yield
    finally:
        await dispatcher.stop()


def create_dispatcher_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = Runtime(
        settings,
        service="webhooks-dispatcher",
        schema=SCHEMA,
        outbox=True,
        consumers=partial(consumers, settings),
        resources=dispatcher_resources,
    )
    return runtime.build_app([])


if __name__ == "__main__":
    settings = Settings()
    serve(create_dispatcher_app, port=settings.dispatcher_port, host=settings.bind_host)
