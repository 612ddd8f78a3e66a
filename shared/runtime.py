"""The per-process runtime every service builds in ``main.py``: DB engine, outbox relay, consumers, retention,
lifespan, readiness."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.consumer import Consumer
from shared.db import make_engine, make_sessionmaker, ping
from shared.http import create_app
from shared.logging import configure_logging
from shared.outbox import OutboxRelay
from shared.retention import Purge, run_retention
from shared.settings import ServiceSettings

log = structlog.stdlib.get_logger(__name__)

Resources = Callable[[FastAPI], AbstractAsyncContextManager[None]]
"""A service's own process-wide resources (clients, keys), opened after the runtime's and closed before them."""

Consumers = Callable[[async_sessionmaker[AsyncSession]], list[Consumer]]
"""Builds a process's consumers (a service's ``consume.consumers``), given its sessionmaker."""


class Runtime:
    """Owns the resources of one process; built once per app, torn down by the lifespan."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        service: str,
        schema: str | None,
        outbox: bool = False,
        consumers: Consumers | None = None,
        resources: Resources | None = None,
        purges: Sequence[Purge] = (),
    ) -> None:
        self.settings = settings
        self.service = service
        self.schema = schema
        self.engine: AsyncEngine | None = None
        self.sessions: async_sessionmaker[AsyncSession] | None = None
        self.relay: OutboxRelay | None = None
        self._with_outbox = outbox
        self._consumer_factory = consumers
        self._resources = resources
        self._purges = purges
        self.consumers: list[Consumer] = []
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
                replay_window_seconds=self.settings.outbox_replay_window_seconds,
                retention_seconds=self.settings.outbox_retention_seconds,
                cluster_check_seconds=self.settings.kafka_cluster_check_seconds,
            )
            await self.relay.start()
        if self._consumer_factory is not None:
            assert self.sessions is not None, "a consuming process needs its schema"
            # Each in the background, reconnecting on its own: the HTTP side (health, internal routes) must serve
            # even while Kafka is away.
            self.consumers = self._consumer_factory(self.sessions)
            for consumer in self.consumers:
                consumer.start()
        retention: asyncio.Task[None] | None = None
        if self._purges and self.sessions is not None and self.schema:
            retention = asyncio.create_task(
                run_retention(self.sessions, self.schema, self._purges, self.settings.retention_interval_seconds),
                name=f"{self.service}-retention",
            )
        log.info("service_started", env=self.settings.app_env)
        try:
            if self._resources is not None:
                async with self._resources(app):
                    try:
                        yield
                    finally:
                        # Consumers first: in-flight handlers may still need the service's resources.
                        await self._stop_consumers()
            else:
                yield
        finally:
            await self._stop_consumers()
            if retention is not None:
                retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention
            if self.relay:
                await self.relay.stop()
            if self.engine:
                await self.engine.dispose()
            log.info("service_stopped")

    async def _stop_consumers(self) -> None:
        """Stop fetching; work in hand gets ``shutdown_grace_seconds`` to finish and commit (idempotent)."""
        consumers, self.consumers = self.consumers, []
        if consumers:
            log.info("consumers_stopping", grace_seconds=self.settings.shutdown_grace_seconds)
            await asyncio.gather(*(c.stop(self.settings.shutdown_grace_seconds) for c in consumers))

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
