"""Idempotent consumer: a redelivered event has no second effect (real broker, real PostgreSQL, FastStream)."""

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.renders.models import SCHEMA, processed_events
from shared.consumer import subscribe_idempotent
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.events.envelope import CloudEvent
from shared.kafka import ensure_topics, make_broker
from shared.testing.kafka import wait_until


@pytest.fixture
async def sessions(isolated_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(isolated_database_url, schema=SCHEMA)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE test_effects (event_id text NOT NULL, subject text NOT NULL)"))
    yield make_sessionmaker(engine)
    await engine.dispose()


async def effects(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with unit_of_work(sessions) as session:
        rows = await session.execute(text("SELECT event_id FROM test_effects ORDER BY event_id"))
        return [r[0] for r in rows]


async def publish(bootstrap: str, topic: str, *events: CloudEvent) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                topic, event.kafka_value(), key=event.kafka_key(), headers=event.kafka_headers()
            )
    finally:
        await producer.stop()


async def test_redelivered_event_has_no_second_effect(
    kafka_bootstrap: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    topic = f"test.consumer.{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, 3, topics=[topic])
    attempts: dict[str, int] = {}

    async def effect(session: AsyncSession, event: CloudEvent) -> None:
        attempts[event.id] = attempts.get(event.id, 0) + 1
        await session.execute(
            text("INSERT INTO test_effects (event_id, subject) VALUES (:id, :s)"), {"id": event.id, "s": event.subject}
        )
        if event.data.get("fail_first") and attempts[event.id] == 1:
            raise RuntimeError("transient failure after the write: the transaction must roll back")

    broker = make_broker(kafka_bootstrap, client_id="test-consumer")
    subscribe_idempotent(
        broker,
        topic,
        group=f"g-{uuid.uuid4().hex[:6]}",
        sessions=sessions,
        table=processed_events,
        effect=effect,
        event_types=frozenset({"test.happened", "test.flaky"}),
    )
    await broker.start()
    try:
        once = CloudEvent(source="/tests", type="test.happened", subject="a", data={})
        flaky = CloudEvent(source="/tests", type="test.flaky", subject="b", data={"fail_first": True})
        unknown = CloudEvent(source="/tests", type="test.unknown", subject="c", data={})
        # The same event three times (a producer retry, a relay republish, a rebalance), one failing once.
        # A last event on the same key (so the same partition) proves every duplicate before it was consumed.
        sentinel = CloudEvent(source="/tests", type="test.happened", subject="a", data={})
        await publish(kafka_bootstrap, topic, once, once, flaky, unknown, once, sentinel)
        expected = sorted([once.id, flaky.id, sentinel.id])

        async def settled() -> bool:
            return sorted(await effects(sessions)) == expected

        await wait_until(settled, wait_seconds=30)
    finally:
        await broker.stop()
    assert attempts[once.id] == 1, "duplicates of a processed event never reach the effect"
    assert attempts[flaky.id] == 2, "the failed attempt was redelivered"
    assert unknown.id not in attempts
    assert sorted(await effects(sessions)) == expected
    async with unit_of_work(sessions) as session:
        recorded = (await session.execute(text("SELECT event_id FROM processed_events"))).scalars().all()
    assert sorted(recorded) == expected
