"""Transactional outbox: services write events in their own transaction; a relay publishes them to Kafka.

Ordering: rows are published in ``id`` order by one relay at a time per schema (a transaction-scoped advisory lock);
other replicas stand by and take over at once if it dies, and ``FOR UPDATE SKIP LOCKED`` keeps two relays from ever
claiming the same row. Delivery is at-least-once: a crash between the broker's ack and the commit republishes a row,
which consumers drop by event id.

A broker that loses its data (the in-memory dev broker restarted; a cluster rebuilt) loses what consumers had not
read yet although the rows are marked sent. The relay notices (the broker reports another cluster id than the one
recorded in ``outbox_broker``, or topics had to be created again) and marks the rows sent within
``OUTBOX_REPLAY_WINDOW_SECONDS`` unsent again, so they go out once more, in order; consumers dedupe by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import zlib
from typing import Any

import asyncpg
import orjson
import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
    insert,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import plain_dsn
from shared.events.envelope import CloudEvent
from shared.events.topics import all_topics
from shared.kafka import cluster_id, ensure_topics, start_producer, stop_producer

log = structlog.stdlib.get_logger(__name__)

OUTBOX_PUBLISHED = Counter("plugin_outbox_published_total", "Outbox rows published", ["schema"])
OUTBOX_LAG = Histogram(
    "plugin_outbox_publish_lag_seconds",
    "Outbox row written -> acknowledged by Kafka",
    ["schema"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
OUTBOX_DEPTH = Gauge("plugin_outbox_unsent", "Outbox rows not yet acknowledged by Kafka", ["schema"])
OUTBOX_OLDEST = Gauge(
    "plugin_outbox_oldest_unsent_age_seconds", "Age of the oldest unsent outbox row (0 when none)", ["schema"]
)
OUTBOX_REPLAYED = Counter(
    "plugin_outbox_replayed_total", "Outbox rows published again after the broker lost its data", ["schema"]
)


def outbox_table(metadata: MetaData) -> Table:
    """The outbox table, declared once here and included in each service's metadata (its own schema)."""
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", Text, nullable=False, unique=True),
        Column("topic", Text, nullable=False),
        Column("key", Text, nullable=False),
        Column("headers", JSONB, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("sent_at", DateTime(timezone=True), nullable=True),
        Index("ix_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL")),
    )


def outbox_broker_table(metadata: MetaData) -> Table:
    """One row per schema: the cluster id of the broker the outbox last published to."""
    return Table(
        "outbox_broker",
        metadata,
        Column("id", SmallInteger, primary_key=True, server_default=text("1")),
        Column("cluster_id", Text, nullable=True),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        CheckConstraint("id = 1", name="ck_outbox_broker_single_row"),
    )


def notify_channel(schema: str) -> str:
    return f"{schema}_outbox"


def notify_trigger_sql(schema: str) -> list[str]:
    """DDL for the trigger that wakes relays (``LISTEN``) when rows are committed; run by each migration."""
    channel = notify_channel(schema)
    return [
        f"""CREATE OR REPLACE FUNCTION {schema}.outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END $$""",
        f"DROP TRIGGER IF EXISTS outbox_notify ON {schema}.outbox",
        f"""CREATE TRIGGER outbox_notify AFTER INSERT ON {schema}.outbox
        FOR EACH STATEMENT EXECUTE FUNCTION {schema}.outbox_notify()""",
    ]


def outbox_values(topic: str, event: CloudEvent) -> dict[str, Any]:
    headers = {k: v.decode() for k, v in event.kafka_headers()}
    return {
        "event_id": event.id,
        "topic": topic,
        "key": event.subject,
        "headers": headers,
        "payload": event.kafka_value(),
    }


async def enqueue(session: AsyncSession, table: Table, topic: str, *events: CloudEvent) -> None:
    """Add events to the caller's transaction; they are published only if it commits."""
    if events:
        await session.execute(insert(table), [outbox_values(topic, e) for e in events])


class OutboxRelay:
    """Publishes a schema's outbox rows in order and marks them sent; retries with backoff while Kafka is away."""

    def __init__(
        self,
        *,
        database_url: str,
        schema: str,
        bootstrap_servers: str,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 5.0,
        retention_seconds: float = 86400,
        create_topics_partitions: int | None = None,
        replay_window_seconds: float = 3600,
        cluster_check_seconds: float = 5.0,
    ) -> None:
        self.dsn = plain_dsn(database_url)
        self.schema = schema
        self.bootstrap = bootstrap_servers
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.max_backoff = max_backoff_seconds
        self.retention_seconds = retention_seconds
        # When set, missing topics are created (with this partition count) before each (re)connection publishes,
        # so a broker that came back empty never auto-creates them with its own defaults.
        self.create_topics_partitions = create_topics_partitions
        self.replay_window = replay_window_seconds
        self.cluster_check_seconds = cluster_check_seconds
        self.lock_key = zlib.crc32(f"{schema}.outbox".encode())
        self._checked = 0.0
        self._cluster: str | None = None
        """The cluster id last recorded by this relay (the database row is the truth across relays)."""
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_cleanup = 0.0

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"outbox-relay-{self.schema}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_producer()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        if self._pool is not None:
            await self._pool.close()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._ensure_connected()
                # Cleared before the pass, not after: a commit notified while we publish must wake the next pass.
                self._wake.clear()
                if time.monotonic() - self._checked > self.cluster_check_seconds:
                    await self.check_broker([])
                while await self.publish_batch() >= self.batch_size:
                    pass
                backoff = 0.1
                await self._maybe_cleanup()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox_relay_retry", schema=self.schema, error=str(exc), retry_in=round(backoff, 2))
                await self._close_producer()
                with contextlib.suppress(Exception):
                    await self.refresh_backlog()  # while Kafka is away is when the backlog matters
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.max_backoff)

    async def _ensure_connected(self) -> None:
        if self._pool is None:
            settings = {"search_path": f"{self.schema},public", "application_name": f"{self.schema}-outbox"}
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2, server_settings=settings)
        if self._listener is None or self._listener.is_closed():
            self._listener = await asyncpg.connect(self.dsn)
            await self._listener.add_listener(notify_channel(self.schema), lambda *_: self._wake.set())
        if self._producer is None:
            created: list[str] = []
            if self.create_topics_partitions:
                created = await ensure_topics(self.bootstrap, self.create_topics_partitions)
            self._producer = await start_producer(self.bootstrap, client_id=f"{self.schema}-outbox")
            await self.check_broker(created)

    async def check_broker(self, created_topics: list[str]) -> int:
        """Record the broker's cluster id; when it changed (or topics had to be created again), mark what was sent
        within the replay window unsent again. Also refreshes the backlog gauges. Returns the rows replayed."""
        assert self._pool is not None
        assert self._producer is not None
        self._checked = time.monotonic()
        current = await cluster_id(self._producer.client)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self.lock_key)  # not while a batch publishes
            replayed = await self._note_cluster(conn, current, created_topics)
        await self.refresh_backlog()
        return replayed

    async def _note_cluster(self, conn: asyncpg.Connection, current: str | None, created_topics: list[str]) -> int:
        """In the caller's transaction (holding the relay lock): record ``current``; replay the window when the
        broker is another cluster than the one recorded, or topics had to be created again."""
        previous = await conn.fetchval("SELECT cluster_id FROM outbox_broker WHERE id = 1 FOR UPDATE")
        recreated = [t for t in created_topics if t in all_topics()]
        if previous != current:
            await conn.execute(
                "INSERT INTO outbox_broker (id, cluster_id) VALUES (1, $1) "
                "ON CONFLICT (id) DO UPDATE SET cluster_id = excluded.cluster_id, updated_at = now()",
                current,
            )
        self._cluster = current
        if not ((previous is not None and previous != current) or recreated):
            return 0
        status = await conn.execute(
            "UPDATE outbox SET sent_at = NULL "
            "WHERE sent_at IS NOT NULL AND sent_at >= now() - make_interval(secs => $1)",
            float(self.replay_window),
        )
        replayed = int(status.split()[-1])
        OUTBOX_REPLAYED.labels(self.schema).inc(replayed)
        log.warning(
            "outbox_replaying_after_broker_loss",
            schema=self.schema,
            previous_cluster=previous,
            cluster=current,
            recreated_topics=recreated,
            rows=replayed,
        )
        return replayed

    async def refresh_backlog(self) -> None:
        """The backlog gauges: unsent rows and the age of the oldest (what grows while Kafka is away)."""
        if self._pool is None:
            return
        depth, oldest = await self._pool.fetchrow(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) "
            "FROM outbox WHERE sent_at IS NULL"
        )
        OUTBOX_DEPTH.labels(self.schema).set(depth)
        OUTBOX_OLDEST.labels(self.schema).set(float(oldest))

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        await stop_producer(producer)

    async def publish_batch(self) -> int:
        """Publish up to ``batch_size`` unsent rows; returns how many were published."""
        assert self._pool is not None
        assert self._producer is not None
        producer = self._producer
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self.lock_key):
                return 0
            rows = await self._unsent(conn)
            if not rows:
                return 0
            # The producer reconnects on its own: make sure it is still the broker the rows before went to, or the
            # window goes out again first (a completion must never overtake the processing replayed before it).
            current = await cluster_id(producer.client)
            if current != self._cluster and await self._note_cluster(conn, current, []):
                rows = await self._unsent(conn)
            futures = []
            for row in rows:
                headers = orjson.loads(row["headers"]) if isinstance(row["headers"], str) else row["headers"]
                futures.append(
                    await producer.send(
                        row["topic"],
                        value=bytes(row["payload"]),
                        key=row["key"].encode(),
                        headers=[(k, str(v).encode()) for k, v in headers.items()],
                    )
                )
            results = await asyncio.gather(*futures, return_exceptions=True)
            # Only the rows before the first failure count as sent: the failed row and everything after it are
            # published again in order (a duplicate is dropped by consumers; an event overtaking another is not).
            sent = []
            for row, res in zip(rows, results, strict=True):
                if isinstance(res, BaseException):
                    break
                sent.append(row)
            if sent:
                await conn.execute(
                    "UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", [r["id"] for r in sent]
                )
            now = time.time()
            for row in sent:
                OUTBOX_LAG.labels(self.schema).observe(max(0.0, now - row["created_at"].timestamp()))
            OUTBOX_PUBLISHED.labels(self.schema).inc(len(sent))
            failures = [res for res in results if isinstance(res, BaseException)]
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(rows)} outbox rows not acknowledged: {failures[0]!r}")
        return len(sent)

    async def _unsent(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return list(
            await conn.fetch(
                "SELECT id, topic, key, headers, payload, created_at FROM outbox WHERE sent_at IS NULL "
                "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.batch_size,
            )
        )

    async def _maybe_cleanup(self) -> None:
        if time.monotonic() - self._last_cleanup < 60:
            return
        self._last_cleanup = time.monotonic()
        assert self._pool is not None
        await self._pool.execute(
            "DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)", float(self.retention_seconds)
        )
