"""``python -m services.renders.worker``: the render worker process (consumer group ``render-workers``).

Consumes ``render.jobs`` one job at a time per process (scale with processes, up to the partition count), runs the
watchdog, and serves health and metrics on its own port. The shared consumer layer gives it its failure handling:
a job that meets the infrastructure away is retried without limit, one that keeps failing for a reason of its own
goes to ``render-workers.dlq`` after ``CONSUMER_RETRY_BUDGET_SECONDS`` (the render itself is failed by then, after
``RENDERS_MAX_ATTEMPTS`` claims), so one poison message never blocks its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from aiokafka import ConsumerRecord
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.renders.config import Settings
from services.renders.main import build_registry
from services.renders.models import SCHEMA
from services.renders.processing import JobProcessor
from services.renders.rendering import RendererRegistry
from services.renders.retention import purges
from shared.consumer import Consumer, consumer_for, parse_event, per_record
from shared.events.contracts import RenderJobV1
from shared.events.topics import RENDER_JOBS
from shared.faults import PoisonRecord
from shared.runtime import Runtime
from shared.serve import serve
from shared.storage import Storage, storage_from_settings

log = structlog.stdlib.get_logger(__name__)


class JobConsumer:
    def __init__(self, settings: Settings, storage: Storage, registry: RendererRegistry) -> None:
        self.settings = settings
        self.storage = storage
        self.registry = registry
        self.processor: JobProcessor | None = None

    def processor_for(self, sessions: async_sessionmaker[AsyncSession]) -> JobProcessor:
        """One processor per process, shared by the consumer and the watchdog (whichever starts first)."""
        if self.processor is None:
            self.processor = JobProcessor(self.settings, sessions, self.storage, self.registry)
        return self.processor

    def consumers(self, sessions: async_sessionmaker[AsyncSession]) -> list[Consumer]:
        self.processor_for(sessions)
        return [
            consumer_for(
                self.settings,
                topics=[RENDER_JOBS],
                group=self.settings.consumer_group,
                shape=per_record(self.handle),
                max_records=1,
                parallel_partitions=1,  # one job at a time per process
                max_poll_interval_ms=int(max(300.0, self.settings.stuck_timeout_seconds) * 1000),
            )
        ]

    async def handle(self, record: ConsumerRecord) -> None:
        structlog.contextvars.clear_contextvars()
        event = parse_event(record)
        try:
            job = RenderJobV1.model_validate(event.data)
        except ValidationError as exc:
            raise PoisonRecord(f"unreadable job: {exc.error_count()} errors") from None
        structlog.contextvars.bind_contextvars(render_id=job.renderId)
        assert self.processor is not None
        await self.processor.process(job.renderId)


def create_worker_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    storage = storage_from_settings(settings)
    registry = build_registry(settings)
    consumer = JobConsumer(settings, storage, registry)

    @asynccontextmanager
    async def resources(app: FastAPI) -> AsyncIterator[None]:
        processor = consumer.processor_for(app.state.runtime.sessions)
        watchdog = asyncio.create_task(processor.watchdog(), name="render-watchdog")
        try:
            yield
        finally:
            # The consumer has stopped fetching and given the job in hand ``shutdown_grace_seconds``; a render
            # still running was cancelled and released for another worker rather than left to its lease.
            await processor.abandon_in_flight()
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            await registry.aclose()

    runtime = Runtime(
        settings,
        service="render-worker",
        schema=SCHEMA,
        outbox=True,
        consumers=consumer.consumers,
        resources=resources,
        purges=purges(settings, storage),
    )
    return runtime.build_app([])


if __name__ == "__main__":
    settings = Settings()
    serve(create_worker_app, port=settings.worker_port, host=settings.bind_host)
