"""Idempotent consumers: the processed event id is recorded in the same transaction as the event's effect.

A consumer wraps each message in :func:`handle_once`; the Kafka offset is committed (the message acked) only after
that transaction commits, so a crash in between redelivers the event and the recorded id turns it into a no-op.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from sqlalchemy import Column, DateTime, MetaData, Table, Text, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import unit_of_work
from shared.events.envelope import CloudEvent

log = structlog.stdlib.get_logger(__name__)
T = TypeVar("T")

# How long a fetch may wait for data on the broker: short, so an event is handled as soon as it lands (a broker
# that does not answer early, like the embedded one, would otherwise add up to 500 ms to every event).
FETCH_MAX_WAIT_MS = 50

EVENTS_CONSUMED = Counter("plugin_events_consumed_total", "Events consumed", ["group", "type", "outcome"])


def processed_events_table(metadata: MetaData) -> Table:
    return Table(
        "processed_events",
        metadata,
        Column("event_id", Text, primary_key=True),
        Column("event_type", Text, nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


async def claim_event(session: AsyncSession, table: Table, event: CloudEvent) -> bool:
    """Record ``event`` as processed in the caller's transaction; False when it already was."""
    stmt = (
        pg_insert(table)
        .values(event_id=event.id, event_type=event.type)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(table.c.event_id)
    )
    return (await session.execute(stmt)).first() is not None


async def handle_once(
    sessions: async_sessionmaker[AsyncSession],
    table: Table,
    event: CloudEvent,
    effect: Callable[[AsyncSession, CloudEvent], Awaitable[T]],
    *,
    group: str,
) -> T | None:
    """Run ``effect`` once per event id; returns None (and does nothing) for a duplicate."""
    structlog.contextvars.bind_contextvars(event_id=event.id, event_type=event.type)
    async with unit_of_work(sessions) as session:
        if not await claim_event(session, table, event):
            EVENTS_CONSUMED.labels(group, event.type, "duplicate").inc()
            log.info("event_duplicate_skipped")
            return None
        result = await effect(session, event)
    EVENTS_CONSUMED.labels(group, event.type, "processed").inc()
    return result


Effect = Callable[[AsyncSession, CloudEvent], Awaitable[object]]
P = TypeVar("P", bound=BaseModel)


def with_payload(model: type[P], effect: Callable[[AsyncSession, CloudEvent, P], Awaitable[object]]) -> Effect:
    """An effect that receives the event's data parsed as ``model``; a payload that does not parse is logged and
    skipped (redelivering cannot fix it, and retrying it forever would stall the partition)."""

    async def run(session: AsyncSession, event: CloudEvent) -> object:
        try:
            payload = model.model_validate(event.data)
        except ValidationError as exc:
            log.error("event_payload_invalid", errors=exc.errors(include_url=False, include_input=False))
            return None
        return await effect(session, event, payload)

    return run


def subscribe_idempotent(
    broker: KafkaBroker,
    topic: str,
    *,
    group: str,
    sessions: async_sessionmaker[AsyncSession],
    table: Table,
    effect: Effect,
    event_types: frozenset[str] | None = None,
) -> None:
    """Subscribe ``effect`` to ``topic`` in consumer group ``group``, once per event id.

    The offset is committed only after the effect's transaction commits (ack after success; a raised error nacks,
    so the record is fetched again). Records that are not CloudEvents, or of types not in ``event_types``, are
    acknowledged and skipped: a consumer ignores what it does not know.
    """

    @broker.subscriber(
        topic,
        group_id=group,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    async def handle(message: KafkaMessage) -> None:
        record = message.raw_message
        try:
            event = CloudEvent.from_kafka(list(record.headers), record.value)  # type: ignore[union-attr]
        except ValueError as exc:
            EVENTS_CONSUMED.labels(group, "unknown", "skipped").inc()
            log.warning("event_not_a_cloudevent", topic=topic, error=str(exc))
            return
        if event_types is not None and event.type not in event_types:
            EVENTS_CONSUMED.labels(group, event.type, "ignored").inc()
            return
        try:
            await handle_once(sessions, table, event, effect, group=group)
        except Exception:
            EVENTS_CONSUMED.labels(group, event.type, "retry").inc()
            log.warning("event_effect_failed_retrying", topic=topic, exc_info=True)
            await asyncio.sleep(1)  # the record is fetched again at once after the nack: don't spin on a dead DB
            raise
