"""Kafka helpers: topic bootstrap, the producer the outbox relay uses, a broker probe, the FastStream factory.

Producers use ``acks="all"`` without idempotence: the embedded broker does not implement ``InitProducerId``, and
consumers dedupe by event id anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from shared.events.topics import all_topics

PRODUCER_REQUEST_TIMEOUT_MS = 5000


async def ensure_topics(bootstrap: str, partitions: int, replication: int = 1, topics: list[str] | None = None) -> None:
    """Create missing topics with the configured partition count; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in (topics or all_topics()) if t not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(t, partitions, replication) for t in wanted])
    finally:
        await admin.close()


def make_producer(bootstrap: str, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=1,
        request_timeout_ms=PRODUCER_REQUEST_TIMEOUT_MS,
        retry_backoff_ms=100,
    )


async def probe_broker(bootstrap: str, wait_seconds: float = 1.0) -> bool:
    """True when a broker answers a metadata request within ``wait_seconds``."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(wait_seconds * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), wait_seconds)
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def make_broker(bootstrap: str, client_id: str, graceful_timeout: float = 25.0) -> KafkaBroker:
    """The FastStream broker consumers subscribe with (explicit group ids and ack policies at each subscriber)."""
    # FastStream's per-message "Received"/"Processed" lines go to DEBUG: at INFO they were one line per event outside
    # structlog (and a measurable share of a busy consumer's CPU); consumers log what matters themselves.
    return KafkaBroker(
        bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        log_level=logging.DEBUG,
        graceful_timeout=graceful_timeout,  # stop(): no new fetches, in-flight handlers get this long to finish
    )
