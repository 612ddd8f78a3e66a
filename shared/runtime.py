"""The per-process runtime every service builds in ``main.py``: DB engine, outbox relay, lifespan, readiness."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db import make_engine, make_sessionmaker, ping
from shared.http import create_app
from shared.kafka import make_broker
from shared.logging import configure_logging
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings

log = structlog.stdlib.get_logger(__name__)

Resources = Callable[[FastAPI], AbstractAsyncContextManager[None]]
"""A service's own process-wide resources (clients, keys), opened after the runtime's and closed before them."""

SubscriberWiring = Callable[[KafkaBroker, async_sessionmaker[AsyncSession]], None]
"""Registers a process's subscribers on its broker (a service's ``events.wire``), given its sessionmaker."""


class Runtime:
    """Owns the resources of one process; built once per app, torn down by the lifespan."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        service: str,
        schema: str | None,
        outbox: bool = False,
        subscribers: SubscriberWiring | None = None,
        resources: Resources | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.schema = schema
        self.engine: AsyncEngine | None = None
        self.sessions: async_sessionmaker[AsyncSession] | None = None
        self.relay: OutboxRelay | None = None
        self._with_outbox = outbox
        self._subscribers = subscribers
        self._resources = resources
        self.broker: KafkaBroker | None = None
        configure_logging(service, json_logs=not settings.is_dev, level=settings.log_level)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = self.settings
        app.state.runtime = self
        if self.schema:
            self.engine = make_engine(
                self.settings.database_url, schema=self.schema, pool_size=self.settings.db_pool_size
            )
            self.sessions = make_sessionmaker(self.engine)
        if self._with_outbox and self.schema:
            self.relay = OutboxRelay(
                database_url=self.settings.database_url,
                schema=self.schema,
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                batch_size=self.settings.outbox_batch_size,
                poll_seconds=self.settings.outbox_poll_seconds,
                create_topics_partitions=self.settings.kafka_partitions if self.settings.kafka_create_topics else None,
            )
            await self.relay.start()
        consuming: asyncio.Task[None] | None = None
        if self._subscribers is not None:
            # In the background: the HTTP side (health, internal routes) must serve even while Kafka is away.
            consuming = asyncio.create_task(self._consume(), name=f"{self.service}-consumers")
        log.info("service_started", env=self.settings.app_env)
        try:
            if self._resources is not None:
                async with self._resources(app):
                    try:
                        yield
                    finally:
                        # Consumers first: in-flight handlers may still need the service's resources.
                        await self._stop_consumers(consuming)
            else:
                yield
        finally:
            await self._stop_consumers(consuming)
            if self.relay:
                await self.relay.stop()
            if self.engine:
                await self.engine.dispose()
            log.info("service_stopped")

    async def _stop_consumers(self, consuming: asyncio.Task[None] | None) -> None:
        """Stop fetching; handlers in flight get ``shutdown_grace_seconds`` to finish and commit (idempotent)."""
        if consuming is not None and not consuming.done():
            consuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consuming
        broker, self.broker = self.broker, None
        if broker is not None:
            log.info("consumers_stopping", grace_seconds=self.settings.shutdown_grace_seconds)
            with contextlib.suppress(Exception):
                await broker.stop()

    async def _consume(self) -> None:
        """Start the subscribers, retrying with backoff until the broker answers (a fresh broker per attempt)."""
        assert self._subscribers is not None
        assert self.sessions is not None, "a consuming process needs its schema"
        backoff = 0.5
        while True:
            broker = make_broker(
                self.settings.kafka_bootstrap_servers,
                client_id=self.service,
                graceful_timeout=self.settings.shutdown_grace_seconds,
            )
            self._subscribers(broker, self.sessions)
            try:
                await broker.start()
                self.broker = broker
                log.info("consumers_started")
                return
            except Exception as exc:
                log.warning("consumers_start_retry", error=type(exc).__name__, retry_in=backoff)
                with contextlib.suppress(Exception):
                    await broker.stop()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)

    def build_app(self, routers: list[APIRouter]) -> FastAPI:
        """The process's FastAPI app: shared middleware, error envelope, health routes, this lifespan."""
        return create_app(
            self.service, settings=self.settings, lifespan=self.lifespan, readiness=self.readiness, routers=routers
        )

    async def readiness(self) -> dict[str, Any]:
        """The hard dependencies of this process; Kafka is not one (the outbox keeps events until it is back)."""
        checks: dict[str, Any] = {}
        if self.engine is not None:
            try:
                await asyncio.wait_for(ping(self.engine), 2)
                checks["database"] = "ok"
            except Exception as exc:
                checks["database"] = f"error: {type(exc).__name__}"
        return checks
