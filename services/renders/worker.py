"""``python -m services.renders.worker``: the render worker process (consumer group ``render-workers``).

Consumes ``render.jobs`` (one job at a time per process; scale with processes, up to the partition count), runs
the watchdog, and serves health and metrics on its own port. A job message that keeps failing before it can even
be processed (unreadable, or a crash outside the render itself) goes to ``render.jobs.dlq`` after
``max_attempts`` deliveries, so one poison message never blocks its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import structlog
from fastapi import FastAPI
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.renders.config import Settings
from services.renders.main import build_registry
from services.renders.models import SCHEMA
from services.renders.processing import JobProcessor
from services.renders.rendering import RendererRegistry
from shared.consumer import FETCH_MAX_WAIT_MS
from shared.events.contracts import RenderJobV1
from shared.events.envelope import CloudEvent
from shared.events.topics import RENDER_JOBS, dlq
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
        self._failures: dict[tuple[int, int], int] = {}

    def processor_for(self, sessions: async_sessionmaker[AsyncSession]) -> JobProcessor:
        """One processor per process, shared by the subscriber and the watchdog (whichever starts first)."""
        if self.processor is None:
            self.processor = JobProcessor(self.settings, sessions, self.storage, self.registry)
        return self.processor

    def wire(self, broker: KafkaBroker, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.processor_for(sessions)

        @broker.subscriber(
            RENDER_JOBS,
            group_id=self.settings.consumer_group,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            max_poll_interval_ms=int(max(300.0, self.settings.stuck_timeout_seconds) * 1000),
        )
        async def handle(message: KafkaMessage) -> None:
            await self.handle(broker, message)

    async def handle(self, broker: KafkaBroker, message: KafkaMessage) -> None:
        record = message.raw_message
        position = (record.partition, record.offset)  # type: ignore[union-attr]
        try:
            event = CloudEvent.from_kafka(list(record.headers), record.value)  # type: ignore[union-attr]
            job = RenderJobV1.model_validate(event.data)
        except ValueError as exc:
            await self._dead_letter(broker, record, f"unreadable job: {exc}")
            return
        structlog.contextvars.bind_contextvars(event_id=event.id, render_id=job.renderId)
        assert self.processor is not None
        try:
            await self.processor.process(job.renderId)
            self._failures.pop(position, None)
        except Exception as exc:
            count = self._failures.get(position, 0) + 1
            self._failures[position] = count
            if count >= self.settings.max_attempts:
                self._failures.pop(position, None)
                await self._dead_letter(broker, record, f"{type(exc).__name__} after {count} attempts")
                return
            log.warning("render_job_retry", attempt=count, error=type(exc).__name__)
            await asyncio.sleep(min(2**count, 10))
            raise  # nack: the same record is fetched again

    async def _dead_letter(self, broker: KafkaBroker, record: object, reason: str) -> None:
        headers = {k: v.decode(errors="replace") for k, v in getattr(record, "headers", [])}
        headers["x-dlq-reason"] = reason[:500]
        await broker.publish(
            getattr(record, "value", b""), topic=dlq(RENDER_JOBS), key=getattr(record, "key", None), headers=headers
        )
        log.error("render_job_dead_lettered", reason=reason)


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
            # The consumer has stopped fetching and waited ``shutdown_grace_seconds`` for the job in hand; a render
            # still running now is released for another worker rather than left to its lease.
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
        subscribers=partial(JobConsumer.wire, consumer),
        resources=resources,
    )
    return runtime.build_app([])


if __name__ == "__main__":
    settings = Settings()
    serve(create_worker_app, port=settings.worker_port, host=settings.bind_host)
