"""The consumer layer against a real broker and PostgreSQL: once per event id, retry budget, dead letters, batches."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.renders.models import SCHEMA, processed_events
from shared.consumer import Consumer, RetryPolicy, batched, idempotent, parse_event, per_record
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.engines import EmbeddedKafka
from shared.events.envelope import CloudEvent
from shared.events.topics import dead_letter_topic
from shared.faults import TransientError
from shared.kafka import ensure_topics
from shared.testing.kafka import read_topic, wait_until


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


async def new_topic(bootstrap: str) -> str:
    topic = f"test.consumer.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, 3, topics=[topic])
    return topic


def consumer(bootstrap: str, topic: str, group: str, shape: object, budget: float = 30.0) -> Consumer:
    return Consumer(
        bootstrap=bootstrap,
        topics=[topic],
        group=group,
        name=group,
        shape=shape,  # type: ignore[arg-type]
        policy=RetryPolicy(budget_seconds=budget, first_delay=0.05, max_delay=0.2),
        create_topic_partitions=3,
    )


async def test_redelivered_event_has_no_second_effect(
    kafka_bootstrap: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    topic = await new_topic(kafka_bootstrap)
    attempts: dict[str, int] = {}

    async def effect(session: AsyncSession, event: CloudEvent) -> None:
        attempts[event.id] = attempts.get(event.id, 0) + 1
        await session.execute(
            text("INSERT INTO test_effects (event_id, subject) VALUES (:id, :s)"), {"id": event.id, "s": event.subject}
        )
        if event.data.get("fail_first") and attempts[event.id] == 1:
            raise RuntimeError("failure after the write: the transaction must roll back")

    group = f"g-{uuid.uuid4().hex[:6]}"
    shape = idempotent(
        sessions, processed_events, effect, group=group, event_types=frozenset({"test.happened", "test.flaky"})
    )
    running = consumer(kafka_bootstrap, topic, group, shape)
    running.start()
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
        await running.stop()
    assert attempts[once.id] == 1, "duplicates of a processed event never reach the effect"
    assert attempts[flaky.id] == 2, "the failed attempt was tried again"
    assert unknown.id not in attempts
    assert sorted(await effects(sessions)) == expected
    async with unit_of_work(sessions) as session:
        recorded = (await session.execute(text("SELECT event_id FROM processed_events"))).scalars().all()
    assert sorted(recorded) == expected


async def test_a_poison_record_is_dead_lettered_and_its_partition_moves_on(
    kafka_bootstrap: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A record PostgreSQL refuses (a NUL in its id) and one that keeps failing go to the group's dead-letter topic
    with their key, headers and value plus where they came from; the records after them on the same partition are
    handled; a transient failure is waited out, never dead-lettered."""
    topic = await new_topic(kafka_bootstrap)
    group = f"g-{uuid.uuid4().hex[:6]}"
    transient_left = [3]

    async def effect(session: AsyncSession, event: CloudEvent) -> None:
        if event.data.get("always_fails"):
            raise ValueError("a bug in the effect")
        if event.data.get("transient") and transient_left[0] > 0:
            transient_left[0] -= 1
            raise TransientError("database away")
        await session.execute(
            text("INSERT INTO test_effects (event_id, subject) VALUES (:id, :s)"), {"id": event.id, "s": event.subject}
        )

    shape = idempotent(sessions, processed_events, effect, group=group)
    running = consumer(kafka_bootstrap, topic, group, shape, budget=1.0)
    running.start()
    try:
        nul = CloudEvent(id="bad\x00id", source="/tests", type="test.happened", subject="k", data={})
        failing = CloudEvent(source="/tests", type="test.happened", subject="k", data={"always_fails": True})
        slow = CloudEvent(source="/tests", type="test.happened", subject="k", data={"transient": True})
        after = CloudEvent(source="/tests", type="test.happened", subject="k", data={})
        await publish(kafka_bootstrap, topic, nul, failing, slow, after)

        async def settled() -> bool:
            return sorted(await effects(sessions)) == sorted([slow.id, after.id])

        await wait_until(settled, wait_seconds=30)
        letters = await read_topic(kafka_bootstrap, dead_letter_topic(group), expected=2, wait_seconds=15)
    finally:
        await running.stop()
    assert transient_left == [0], "the transient failures were retried"
    assert len(letters) == 2, [dict(r.headers) for r in letters]
    by_id = {parse_event(r).id: r for r in letters}
    assert set(by_id) == {nul.id, failing.id}, "the transient one was never dead-lettered"
    for event in (nul, failing):
        record = by_id[event.id]
        headers = {k: v.decode() for k, v in record.headers}
        assert record.key == b"k"
        assert record.value == event.kafka_value()
        assert headers["ce_id"] == event.id
        assert headers["x-dlq-group"] == group
        assert headers["x-dlq-topic"] == topic
        assert int(headers["x-dlq-attempts"]) >= 1
    assert "a bug in the effect" in {k: v.decode() for k, v in by_id[failing.id].headers}["x-dlq-error"]


async def test_a_batch_isolates_its_bad_record(
    kafka_bootstrap: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The batch shape stores the good records of a batch a bad one made fail, and dead-letters only the bad one."""
    topic = await new_topic(kafka_bootstrap)
    group = f"g-{uuid.uuid4().hex[:6]}"
    calls: list[int] = []

    async def store(records: Sequence[ConsumerRecord]) -> None:
        calls.append(len(records))
        events = [parse_event(r) for r in records]
        async with unit_of_work(sessions) as session:
            for event in events:
                await session.execute(
                    text("INSERT INTO test_effects (event_id, subject) VALUES (:id, :s)"),
                    {"id": event.id, "s": event.subject},
                )

    good = [CloudEvent(source="/tests", type="test.happened", subject="k", data={}) for _ in range(5)]
    bad = CloudEvent(id="nul\x00", source="/tests", type="test.happened", subject="k", data={})
    await publish(kafka_bootstrap, topic, *good[:2], bad, *good[2:])
    running = consumer(kafka_bootstrap, topic, group, batched(store), budget=0.5)
    running.start()
    try:

        async def stored() -> bool:
            return sorted(await effects(sessions)) == sorted(e.id for e in good)

        await wait_until(stored, wait_seconds=30)
        letters = await read_topic(kafka_bootstrap, dead_letter_topic(group), expected=1, wait_seconds=15)
    finally:
        await running.stop()
    assert [parse_event(r).id for r in letters] == [bad.id]
    assert max(calls) == 6, "one batch first"
    assert 1 in calls, "then one record at a time"


async def test_stop_leaves_the_record_in_hand_uncommitted(
    kafka_bootstrap: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A consumer stopped while a record waits for the infrastructure commits nothing for it: the next member of
    the group gets it again (nothing lost), and it is handled once."""
    topic = await new_topic(kafka_bootstrap)
    group = f"g-{uuid.uuid4().hex[:6]}"
    away = asyncio.Event()
    away.set()
    tries = [0]

    async def effect(session: AsyncSession, event: CloudEvent) -> None:
        tries[0] += 1
        if away.is_set():
            raise TransientError("database away")
        await session.execute(
            text("INSERT INTO test_effects (event_id, subject) VALUES (:id, :s)"), {"id": event.id, "s": event.subject}
        )

    event = CloudEvent(source="/tests", type="test.happened", subject="k", data={})
    await publish(kafka_bootstrap, topic, event)
    first = consumer(kafka_bootstrap, topic, group, idempotent(sessions, processed_events, effect, group=group))
    first.start()

    async def retrying() -> bool:
        return tries[0] >= 2

    await wait_until(retrying, wait_seconds=30)
    await first.stop(grace_seconds=0.5)
    assert await effects(sessions) == []
    away.clear()
    second = consumer(kafka_bootstrap, topic, group, idempotent(sessions, processed_events, effect, group=group))
    second.start()
    try:

        async def handled() -> bool:
            return await effects(sessions) == [event.id]

        await wait_until(handled, wait_seconds=30)
    finally:
        await second.stop()


async def test_a_broadcast_reader_starts_over_when_the_broker_lost_its_data(own_broker: EmbeddedKafka) -> None:
    """The gateway's shape: a fresh reader starts at the end; one whose broker came back empty (a new cluster)
    reads the new broker from the beginning, so what the outboxes publish again (revocations) is never skipped,
    although its old positions lie past the new broker's end."""
    bootstrap = own_broker.bootstrap
    topic = f"test.broadcast.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, 1, topics=[topic])
    seen: list[str] = []

    async def handle(record: ConsumerRecord) -> None:
        seen.append(parse_event(record).id)

    def event() -> CloudEvent:
        return CloudEvent(source="/tests", type="apikey.revoked", subject="k", data={})

    before = event()
    await publish(bootstrap, topic, before)
    reader = Consumer(
        bootstrap=bootstrap,
        topics=[topic],
        group=None,
        name=f"reader-{uuid.uuid4().hex[:6]}",
        shape=per_record(handle),
        cluster_check_seconds=0.5,
    )
    reader.start()
    try:
        await asyncio.wait_for(reader.ready.wait(), 30)
        first = [event() for _ in range(3)]
        await publish(bootstrap, topic, *first)

        async def read(expected: list[CloudEvent]) -> bool:
            return [e.id for e in expected] == seen[-len(expected) :]

        await wait_until(lambda: read(first), wait_seconds=30)
        assert before.id not in seen, "a fresh reader starts at the end"

        own_broker.proc.kill()  # type: ignore[union-attr]
        own_broker.proc.wait()  # type: ignore[union-attr]
        own_broker.start()
        await ensure_topics(bootstrap, 1, topics=[topic])
        again = [event(), event()]  # offsets 0 and 1 of the new broker, below the reader's old position 4
        await publish(bootstrap, topic, *again)
        await wait_until(lambda: read(again), wait_seconds=60)
    finally:
        await reader.stop()


async def test_a_record_within_its_budget_holds_only_its_own_partition(
    kafka_bootstrap: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """While a failing record is retried (here for 8 s) the other partitions go on: a record published on another
    partition once the failing one is being retried is handled before the failing one is dead-lettered."""
    topic = await new_topic(kafka_bootstrap)
    group = f"g-{uuid.uuid4().hex[:6]}"
    tries = [0]

    async def effect(session: AsyncSession, event: CloudEvent) -> None:
        if event.data.get("always_fails"):
            tries[0] += 1
            raise ValueError("a bug in the effect")
        await session.execute(
            text("INSERT INTO test_effects (event_id, subject) VALUES (:id, :s)"), {"id": event.id, "s": event.subject}
        )

    async def publish_to(partition: int, event: CloudEvent) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(
                topic, event.kafka_value(), key=event.kafka_key(), headers=event.kafka_headers(), partition=partition
            )
        finally:
            await producer.stop()

    failing = CloudEvent(source="/tests", type="test.happened", subject="a", data={"always_fails": True})
    later = CloudEvent(source="/tests", type="test.happened", subject="b", data={})
    await publish_to(0, failing)
    running = consumer(
        kafka_bootstrap, topic, group, idempotent(sessions, processed_events, effect, group=group), budget=8.0
    )
    running.start()
    try:

        async def retrying() -> bool:
            return tries[0] >= 1

        await wait_until(retrying, wait_seconds=30)
        await publish_to(1, later)

        async def handled() -> bool:
            return await effects(sessions) == [later.id]

        await wait_until(handled, wait_seconds=30)
        assert tries[0] >= 1
        assert await read_topic(kafka_bootstrap, dead_letter_topic(group), expected=1, wait_seconds=0.5) == [], (
            "the other partition waited for the failing record's budget"
        )
        letters = await read_topic(kafka_bootstrap, dead_letter_topic(group), expected=1, wait_seconds=30)
    finally:
        await running.stop()
    assert [parse_event(r).id for r in letters] == [failing.id]
