"""Consumer lag per group and topic (``plugin_consumer_lag``): end offsets minus the group's committed offsets.

This is the figure the consumers' autoscaling (KEDA) acts on; exported here so operators see it next to the rest.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.telemetry.metrics import CONSUMER_LAG
from shared.events.topics import CONSUMER_GROUPS

log = structlog.stdlib.get_logger(__name__)


async def measure(bootstrap: str, groups: dict[str, list[str]] = CONSUMER_GROUPS) -> dict[tuple[str, str], int]:
    """``{(group, topic): lag}``; a group that never committed counts everything as lag."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="telemetry-lag")
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="telemetry-lag", enable_auto_commit=False)
    await admin.start()
    await probe.start()
    try:
        lags: dict[tuple[str, str], int] = {}
        for group, topics in groups.items():
            committed = await admin.list_consumer_group_offsets(group)
            for topic in topics:
                partitions = [TopicPartition(topic, p) for p in sorted(probe.partitions_for_topic(topic) or [])]
                if not partitions:
                    continue
                ends = await probe.end_offsets(partitions)
                lag = 0
                for tp in partitions:
                    done = committed.get(tp)
                    lag += max(0, ends[tp] - (done.offset if done is not None and done.offset >= 0 else 0))
                lags[(group, topic)] = lag
        return lags
    finally:
        with contextlib.suppress(Exception):
            await probe.stop()
        with contextlib.suppress(Exception):
            await admin.close()


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
