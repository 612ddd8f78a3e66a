"""Consumer lag per group and topic (``plugin_consumer_lag``): end offsets minus the group's committed offsets; and
the records in each group's dead-letter topic (``plugin_dead_letters``).

Lag is the figure the consumers' autoscaling (KEDA) acts on; exported here so operators see it next to the rest.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.telemetry.metrics import CONSUMER_LAG, DEAD_LETTERS
from shared.events.topics import BROADCAST_READERS, CONSUMER_GROUPS, dead_letter_topic

log = structlog.stdlib.get_logger(__name__)


async def measure(bootstrap: str, groups: dict[str, list[str]] = CONSUMER_GROUPS) -> dict[tuple[str, str], int]:
    """``{(group, topic): lag}``; a group that never committed counts everything as lag.

    Per group, a consumer that never joins it reads the committed offsets (``committed()`` asks the group
    coordinator) and one small fetch per partition from there gives the high watermark. Both work on every
    Kafka-protocol broker the platform runs on; the admin client's group ``OffsetFetch`` and ``ListOffsets``
    (``end_offsets``) do not on the embedded one.
    """
    lags: dict[tuple[str, str], int] = {}
    for group, topics in groups.items():
        reader = _reader(bootstrap, group, "telemetry-lag")
        await reader.start()
        try:
            await reader.topics()  # loads the cluster metadata partitions_for_topic reads
            committed: dict[TopicPartition, int] = {}
            for topic in topics:
                for partition in sorted(reader.partitions_for_topic(topic) or []):
                    tp = TopicPartition(topic, partition)
                    offset = await reader.committed(tp)
                    committed[tp] = offset if offset is not None and offset >= 0 else 0
            lags.update({(group, topic): lag for topic, lag in (await _behind(reader, committed)).items()})
        finally:
            with contextlib.suppress(Exception):
                await reader.stop()
    return lags


def _reader(bootstrap: str, group: str | None, client_id: str) -> AIOKafkaConsumer:
    """A consumer that only looks: it never joins ``group`` nor commits, and fetches a record at most."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id=client_id,
        enable_auto_commit=False,
        max_partition_fetch_bytes=1024,
        fetch_max_wait_ms=10,
    )


async def _behind(reader: AIOKafkaConsumer, positions: dict[TopicPartition, int]) -> dict[str, int]:
    """Per topic, how far the end of its partitions is past ``positions`` (one small fetch per partition from
    there gives the high watermark); topics whose end could not be read are left out."""
    if not positions:
        return {}
    reader.assign(list(positions))
    for tp, offset in positions.items():
        reader.seek(tp, offset)
    for _ in range(5):
        if all(reader.highwater(tp) is not None for tp in positions):
            break
        await reader.getmany(timeout_ms=200)
    behind: dict[str, int] = {}
    for topic in {tp.topic for tp in positions}:
        partitions = [tp for tp in positions if tp.topic == topic]
        if all(reader.highwater(tp) is not None for tp in partitions):
            behind[topic] = sum(max(0, (reader.highwater(tp) or 0) - positions[tp]) for tp in partitions)
    return behind


async def dead_letters(bootstrap: str, names: list[str] | None = None) -> dict[str, int]:
    """``{group: records in its dead-letter topic}`` for every group and broadcast reader."""
    names = names if names is not None else [*CONSUMER_GROUPS, *BROADCAST_READERS]
    reader = _reader(bootstrap, None, "telemetry-dead-letters")
    await reader.start()
    try:
        await reader.topics()
        starts = {
            TopicPartition(dead_letter_topic(name), p): 0
            for name in names
            for p in sorted(reader.partitions_for_topic(dead_letter_topic(name)) or [])
        }
        counts = await _behind(reader, starts)
    finally:
        with contextlib.suppress(Exception):
            await reader.stop()
    return {name: counts[dead_letter_topic(name)] for name in names if dead_letter_topic(name) in counts}


async def run(bootstrap: str, interval: float) -> None:
    while True:
        try:
            for (group, topic), lag in (await measure(bootstrap)).items():
                CONSUMER_LAG.labels(group, topic).set(lag)
            for group, count in (await dead_letters(bootstrap)).items():
                DEAD_LETTERS.labels(group).set(count)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("consumer_lag_unavailable", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(interval)
