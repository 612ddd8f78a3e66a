"""Consumer lag per group (``plugin_consumer_lag``): end offsets minus the group's committed offsets, on a real
broker, for a group that committed part of a topic and one that never consumed it."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from services.telemetry.lag import dead_letters, measure
from shared.engines import EmbeddedKafka
from shared.kafka import make_producer


async def test_lag_is_what_the_group_has_not_committed(own_broker: EmbeddedKafka) -> None:
    topic = "render.events"
    producer = make_producer(own_broker.bootstrap, client_id="test")
    await producer.start()
    try:
        for i in range(30):
            await producer.send(topic, value=b"{}", key=f"k{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=own_broker.bootstrap,
        group_id="half-done",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumed = 0
        while consumed < 10:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10 - consumed)
            for partition, records in batch.items():
                consumed += len(records)
                await consumer.commit({partition: records[-1].offset + 1})
    finally:
        await consumer.stop()

    lags = await measure(own_broker.bootstrap, {"half-done": [topic], "never-started": [topic]})
    assert lags[("half-done", topic)] == 20
    assert lags[("never-started", topic)] == 30


async def test_dead_letters_are_counted_per_group(own_broker: EmbeddedKafka) -> None:
    """``plugin_dead_letters{group}``: the records in each group's dead-letter topic."""
    producer = make_producer(own_broker.bootstrap, client_id="test")
    await producer.start()
    try:
        for i in range(4):
            await producer.send("credits.dlq", value=b"{}", key=f"k{i}".encode())
        await producer.send("webhooks.dlq", value=b"{}", key=b"k")
        await producer.flush()
    finally:
        await producer.stop()
    counts = await dead_letters(own_broker.bootstrap)
    assert counts["credits"] == 4
    assert counts["webhooks"] == 1
    assert counts["telemetry"] == 0
    assert counts["render-workers"] == 0
    assert counts["gateway"] == 0
