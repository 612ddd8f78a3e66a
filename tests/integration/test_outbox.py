"""Outbox relay against a real PostgreSQL and a real Kafka-protocol broker."""

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.renders.models import SCHEMA, outbox
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.engines import EmbeddedKafka
from shared.events.envelope import CloudEvent
from shared.kafka import ensure_topics
from shared.outbox import OUTBOX_DEPTH, OUTBOX_OLDEST, OutboxRelay, enqueue
from shared.testing.kafka import as_event, read_topic, wait_until


@pytest.fixture
async def sessions(isolated_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(isolated_database_url, schema=SCHEMA)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def write_events(
    sessions: async_sessionmaker[AsyncSession], topic: str, aggregates: int, per_aggregate: int
) -> list[CloudEvent]:
    """Interleave aggregates, one transaction per round, like concurrent requests would."""
    written: list[CloudEvent] = []
    for seq in range(per_aggregate):
        async with unit_of_work(sessions) as session:
            events = [
                CloudEvent(source="/tests", type="test.happened", subject=f"agg-{a}", data={"seq": seq})
                for a in range(aggregates)
            ]
            await enqueue(session, outbox, topic, *events)
            written.extend(events)
    return written


async def unsent(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with unit_of_work(sessions) as session:
        return int((await session.execute(select(func.count()).where(outbox.c.sent_at.is_(None)))).scalar_one())


def relay(url: str, bootstrap: str, batch: int = 100) -> OutboxRelay:
    return OutboxRelay(
        database_url=url,
        schema=SCHEMA,
        bootstrap_servers=bootstrap,
        batch_size=batch,
        poll_seconds=0.2,
        max_backoff_seconds=0.5,
    )


def assert_exactly_once_in_order(records: list, written: list[CloudEvent]) -> None:
    events = [as_event(r) for r in records]
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids)), "an event was published twice"
    assert set(ids) == {e.id for e in written}
    by_key: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for record, event in zip(records, events, strict=True):
        assert record.key.decode() == event.subject
        by_key[event.subject].append((record.partition, record.offset, int(event.data["seq"])))
    for subject, seen in by_key.items():
        assert len({p for p, _, _ in seen}) == 1, f"{subject} spread over partitions"
        seqs = [seq for _, _, seq in sorted(seen)]
        assert seqs == sorted(seqs), f"{subject} out of order: {seqs}"


async def test_rows_written_while_broker_is_down_are_published_once_in_order_after_it_returns(
    isolated_database_url: str, sessions: async_sessionmaker[AsyncSession], own_broker: EmbeddedKafka
) -> None:
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    await ensure_topics(own_broker.bootstrap, 3, topics=[topic])
    own_broker.stop()
    written = await write_events(sessions, topic, aggregates=8, per_aggregate=25)
    worker = relay(isolated_database_url, own_broker.bootstrap, batch=60)
    await worker.start()
    try:
        await asyncio.sleep(1.5)  # the relay keeps retrying against the stopped broker
        assert await unsent(sessions) == len(written)
        own_broker.start()
        await ensure_topics(own_broker.bootstrap, 3, topics=[topic])  # what `make run` does when the broker restarts

        async def all_sent() -> bool:
            return await unsent(sessions) == 0

        await wait_until(all_sent, wait_seconds=60)
    finally:
        await worker.stop()
    records = await read_topic(own_broker.bootstrap, topic, expected=len(written))
    assert_exactly_once_in_order(records, written)


async def test_two_relays_never_publish_a_row_twice(
    isolated_database_url: str, sessions: async_sessionmaker[AsyncSession], own_broker: EmbeddedKafka
) -> None:
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    await ensure_topics(own_broker.bootstrap, 3, topics=[topic])
    first, second = (
        relay(isolated_database_url, own_broker.bootstrap, 50),
        relay(isolated_database_url, own_broker.bootstrap, 50),
    )
    await first.start()
    await second.start()
    try:
        written = await write_events(sessions, topic, aggregates=20, per_aggregate=50)

        async def all_sent() -> bool:
            return await unsent(sessions) == 0

        await wait_until(all_sent, wait_seconds=60)
    finally:
        await first.stop()
        await second.stop()
    records = await read_topic(own_broker.bootstrap, topic, expected=len(written))
    assert_exactly_once_in_order(records, written)


async def test_relay_is_woken_by_notify_not_by_polling(
    isolated_database_url: str, sessions: async_sessionmaker[AsyncSession], own_broker: EmbeddedKafka
) -> None:
    """With a 30 s poll interval, a committed row still goes out at once: LISTEN/NOTIFY wakes the relay."""
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    await ensure_topics(own_broker.bootstrap, 3, topics=[topic])
    worker = OutboxRelay(
        database_url=isolated_database_url, schema=SCHEMA, bootstrap_servers=own_broker.bootstrap, poll_seconds=30
    )
    await worker.start()
    try:
        await asyncio.sleep(0.5)  # let it connect, drain (nothing) and go to sleep on the notification
        written = await write_events(sessions, topic, aggregates=1, per_aggregate=1)

        async def all_sent() -> bool:
            return await unsent(sessions) == 0

        await wait_until(all_sent, wait_seconds=5)
    finally:
        await worker.stop()
    assert_exactly_once_in_order(await read_topic(own_broker.bootstrap, topic, expected=1), written)


async def test_a_broker_that_lost_its_data_gets_the_recent_window_again(
    isolated_database_url: str, sessions: async_sessionmaker[AsyncSession], own_broker: EmbeddedKafka
) -> None:
    """Rows already marked sent are published again, in order, when the broker comes back as a new cluster (the
    in-memory broker killed and restarted); rows sent before the replay window are not. The backlog gauges show
    what waits while the broker is away."""
    topic = f"test.outbox.{uuid.uuid4().hex[:8]}"
    await ensure_topics(own_broker.bootstrap, 3, topics=[topic])
    worker = OutboxRelay(
        database_url=isolated_database_url,
        schema=SCHEMA,
        bootstrap_servers=own_broker.bootstrap,
        poll_seconds=0.2,
        max_backoff_seconds=0.5,
        replay_window_seconds=600,
        cluster_check_seconds=0.5,
    )
    await worker.start()
    try:
        old = await write_events(sessions, topic, aggregates=2, per_aggregate=3)

        async def all_sent() -> bool:
            return await unsent(sessions) == 0

        await wait_until(all_sent, wait_seconds=30)
        async with unit_of_work(sessions) as session:  # these went out long ago: outside the replay window
            await session.execute(outbox.update().values(sent_at=func.now() - func.make_interval(0, 0, 0, 1)))
        recent = await write_events(sessions, topic, aggregates=4, per_aggregate=5)
        await wait_until(all_sent, wait_seconds=30)

        own_broker.proc.kill()  # type: ignore[union-attr]  # kill -9: everything it held is gone
        own_broker.proc.wait()  # type: ignore[union-attr]
        waiting = await write_events(sessions, topic, aggregates=1, per_aggregate=2)

        async def backlog_shown() -> bool:
            return OUTBOX_DEPTH.labels(SCHEMA)._value.get() == len(waiting)

        await wait_until(backlog_shown, wait_seconds=30)
        assert OUTBOX_OLDEST.labels(SCHEMA)._value.get() > 0
        own_broker.start()
        await ensure_topics(own_broker.bootstrap, 3, topics=[topic])
        await wait_until(all_sent, wait_seconds=60)
        records = await read_topic(own_broker.bootstrap, topic, expected=len(recent) + len(waiting))
    finally:
        await worker.stop()
    ids = [as_event(r).id for r in records]
    assert sorted(ids) == sorted(e.id for e in recent + waiting), "the window again, and what waited, each once"
    assert_exactly_once_in_order([r for r in records if as_event(r).id in {e.id for e in recent}], recent)
    assert not {e.id for e in old} & set(ids)
    assert OUTBOX_DEPTH.labels(SCHEMA)._value.get() == 0
