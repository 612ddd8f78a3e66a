"""Reading a topic back in tests: every record from the beginning, as CloudEvents."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from shared.events.envelope import CloudEvent


async def read_topic(bootstrap: str, topic: str, expected: int, wait_seconds: float = 30) -> list[ConsumerRecord]:
    """Records of ``topic`` (all partitions, from offset 0) until ``expected`` arrived or time ran out.

    After ``expected`` records it keeps reading briefly, so a duplicate arriving late is still seen.
    """
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline and len(records) < expected:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(messages)
        grace = time.monotonic() + 1.0
        while time.monotonic() < grace:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


def as_event(record: ConsumerRecord) -> CloudEvent:
    return CloudEvent.from_kafka(list(record.headers), record.value)


async def wait_until(predicate: object, wait_seconds: float = 30, interval: float = 0.1) -> None:
    """Poll an async predicate until it is true; raise ``TimeoutError`` otherwise."""
    assert callable(predicate)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise TimeoutError("condition not met in time")
