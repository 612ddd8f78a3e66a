"""Kafka wiring of the telemetry service: the ingest consumer, delegating each batch to ``ingest.store``.

Consumer group ``telemetry`` on ``render.events``, ``gateway.requests`` and ``webhook.events``, in the batch shape of
the shared consumer layer (one transaction per fetched batch, then the offsets are committed): a crash before the
commit redelivers the batch and the recorded event ids make it a no-op; a batch that fails for a reason of its own is
split so only the bad record is retried and dead-lettered (``telemetry.dlq``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import asyncpg
import structlog
from aiokafka import ConsumerRecord

from services.telemetry import metrics
from services.telemetry.config import Settings
from services.telemetry.ingest import PURGE_SQL, minute_rollup_purges, parse_records, store
from shared.consumer import Consumer, batched, consumer_for
from shared.db import plain_dsn
from shared.events.topics import CONSUMER_GROUPS

log = structlog.stdlib.get_logger(__name__)

TOPICS = CONSUMER_GROUPS["telemetry"]


class Ingestor:
    """Runs the ingest consumer in the telemetry process (started and stopped by its lifespan)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self._purger: asyncio.Task[None] | None = None
        self.consumer: Consumer = consumer_for(
            settings,
            topics=TOPICS,
            group=settings.consumer_group,
            shape=batched(self.ingest),
            max_records=settings.batch_size,
        )

    @property
    def ready(self) -> asyncio.Event:
        return self.consumer.ready

    async def start(self) -> None:
        self.consumer.start()
        self._purger = asyncio.create_task(self._purge_loop(), name="telemetry-retention")

    async def stop(self) -> None:
        await self.consumer.stop(self.settings.shutdown_grace_seconds)
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        if self._pool is not None:
            await self._pool.close()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            settings = {"search_path": "telemetry,public", "application_name": "telemetry-ingest"}
            self._pool = await asyncpg.create_pool(
                plain_dsn(self.settings.database_url), min_size=1, max_size=2, server_settings=settings
            )
        return self._pool

    async def ingest(self, records: Sequence[ConsumerRecord]) -> int:
        """Store one batch in one transaction; a failure raises to the consumer layer (which waits out the
        database, or isolates a bad record)."""
        events = parse_records(records)
        pool = await self.pool()
        async with pool.acquire() as conn, conn.transaction():
            fresh = await store(conn, events)
        for event, payload in fresh:
            metrics.observe(event, payload)
            metrics.EVENTS_INGESTED.labels(event.type, "new").inc()
        if len(fresh) < len(events):
            metrics.EVENTS_INGESTED.labels("any", "duplicate").inc(len(events) - len(fresh))
        return len(fresh)

    async def _purge_loop(self) -> None:
        last = 0.0
        while True:
            await asyncio.sleep(min(60.0, self.settings.retention_interval_seconds))
            if time.monotonic() - last >= self.settings.retention_interval_seconds:
                last = time.monotonic()
                await self.purge()

    async def purge(self) -> None:
        """Raw events and per-minute rollups past their retention go; hourly rollups stay (small, and what long
        windows read)."""
        try:
            pool = await self.pool()
            await pool.execute(PURGE_SQL, self.settings.raw_retention_days * 86400.0)
            for statement in minute_rollup_purges():
                await pool.execute(statement, self.settings.minute_rollup_retention_days * 86400.0)
        except Exception as exc:
            log.warning("telemetry_purge_failed", error=f"{type(exc).__name__}: {exc}")
