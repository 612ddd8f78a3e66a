"""Kafka wiring of the telemetry service: the ingest consumer, delegating each batch to ``ingest.store``.

Consumer group ``telemetry`` on ``render.events``, ``gateway.requests`` and ``webhook.events``. It reads batches with
aiokafka directly (FastStream's per-message handlers would mean one transaction per event), stores each batch in one
transaction, then commits the offsets: a crash before the commit redelivers the batch, and the recorded event ids
make it a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from services.telemetry import metrics
from services.telemetry.config import Settings
from services.telemetry.ingest import PURGE_SQL, parse_records, store
from services.telemetry.rollup import Typed
from shared.db import plain_dsn
from shared.events.topics import CONSUMER_GROUPS
from shared.retry import until_done

log = structlog.stdlib.get_logger(__name__)

TOPICS = CONSUMER_GROUPS["telemetry"]


class Ingestor:
    """Runs the consumer loop in the telemetry process (started and stopped by its lifespan)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="telemetry-ingest")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pool is not None:
            await self._pool.close()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            settings = {"search_path": "telemetry,public", "application_name": "telemetry-ingest"}
            self._pool = await asyncpg.create_pool(
                plain_dsn(self.settings.database_url), min_size=1, max_size=2, server_settings=settings
            )
        return self._pool

    async def run(self) -> None:
        backoff = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                *TOPICS,
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                group_id=self.settings.consumer_group,
                client_id="telemetry",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=50,
            )
            try:
                await consumer.start()
                self.ready.set()
                backoff = 0.5
                log.info("telemetry_consumer_started", topics=TOPICS)
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("telemetry_consumer_retry", error=f"{type(exc).__name__}: {exc}", retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        last_purge = 0.0
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=self.settings.batch_size)
            records = [record for partition in batches.values() for record in partition]
            if records:
                await self.ingest(records)
                await consumer.commit()
            if time.monotonic() - last_purge > 600:
                last_purge = time.monotonic()
                await self.purge()

    async def ingest(self, records: Sequence[ConsumerRecord]) -> int:
        """Store one batch, retrying while the database is away (the offsets are not committed meanwhile)."""
        events = parse_records(records)

        async def store_batch() -> list[Typed]:
            pool = await self.pool()
            async with pool.acquire() as conn, conn.transaction():
                return await store(conn, events)

        fresh = await until_done(store_batch, event="telemetry_store_retry")
        for event, payload in fresh:
            metrics.observe(event, payload)
            metrics.EVENTS_INGESTED.labels(event.type, "new").inc()
        if len(fresh) < len(events):
            metrics.EVENTS_INGESTED.labels("any", "duplicate").inc(len(events) - len(fresh))
        return len(fresh)

    async def purge(self) -> None:
        """Raw events past their retention go; rollups stay (they are small and what the summary reads)."""
        try:
            pool = await self.pool()
            await pool.execute(PURGE_SQL, self.settings.raw_retention_days * 86400.0)
        except Exception as exc:
            log.warning("telemetry_purge_failed", error=f"{type(exc).__name__}: {exc}")
