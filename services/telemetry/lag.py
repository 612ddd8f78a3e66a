"""Consumer lag per group and topic (``plugin_consumer_lag``): end offsets minus the group's committed offsets.

This is the figure the consumers' autoscaling (KEDA) acts on; exported here so operators see it next to the rest.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.telemetry.metrics import CONSUMER_LAG
from shared.events.topics import CONSUMER_GROUPS

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
        reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id="telemetry-lag",
            enable_auto_commit=False,
            max_partition_fetch_bytes=1024,
            fetch_max_wait_ms=10,
        )
        await reader.start()
        try:
            await reader.topics()  # loads the cluster metadata partitions_for_topic reads
            committed: dict[TopicPartition, int] = {}
            for topic in topics:
                for partition in sorted(reader.partitions_for_topic(topic) or []):
                    tp = TopicPartition(topic, partition)
                    offset = await reader.committed(tp)
                    committed[tp] = offset if offset is not None and offset >= 0 else 0
            if not committed:
                continue
            reader.assign(list(committed))
            for tp, offset in committed.items():
                reader.seek(tp, offset)
            for _ in range(5):
                if all(reader.highwater(tp) is not None for tp in committed):
                    break
                await reader.getmany(timeout_ms=200)
            for topic in topics:
                partitions = [tp for tp in committed if tp.topic == topic]
                if partitions and all(reader.highwater(tp) is not None for tp in partitions):
                    lags[(group, topic)] = sum(max(0, (reader.highwater(tp) or 0) - committed[tp]) for tp in partitions)
        finally:
            with contextlib.suppress(Exception):
                await reader.stop()
    return lags


async def run(bootstrap: str, interval: float) -> None:
    while True:
        try:
            for (group, topic), lag in (await measure(bootstrap)).items():
                CONSUMER_LAG.labels(group, topic).set(lag)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("consumer_lag_unavailable", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(interval)
