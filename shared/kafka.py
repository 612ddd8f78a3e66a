"""Kafka helpers: topic bootstrap, the producer the outbox relay uses, a broker probe, the cluster id.

Producers use ``acks="all"`` without idempotence: the embedded broker does not implement ``InitProducerId``, and
consumers dedupe by event id anyway.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from shared.events.topics import all_topics

PRODUCER_REQUEST_TIMEOUT_MS = 5000


async def ensure_topics(
    bootstrap: str, partitions: int, replication: int = 1, topics: list[str] | None = None
) -> list[str]:
    """Create missing topics with the configured partition count (existing ones are left as they are); returns the
    topics it had to create."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in (topics or all_topics()) if t not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(t, partitions, replication) for t in wanted])
        return wanted
    finally:
        await admin.close()


async def cluster_id(client: AIOKafkaClient) -> str | None:
    """The cluster id the broker reports (Metadata v2+). A broker that lost its data is a new cluster: the id is
    how relays and consumers notice that offsets they knew no longer mean anything. Asks a random broker, and
    another one if that fails (a rolling restart must not look like a lost cluster)."""
    error: Exception | None = None
    for _ in range(2):
        node = client.get_random_node()
        if node is None:
            await client.force_metadata_update()
            node = client.get_random_node()
        if node is None:
            raise RuntimeError("no broker known")
        try:
            response = await client.send(node, MetadataRequest([]))
        except Exception as exc:
            error = exc
            continue
        value = getattr(response, "cluster_id", None)
        return str(value) if value else None
    assert error is not None
    raise error


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


async def start_producer(bootstrap: str, client_id: str) -> AIOKafkaProducer:
    """A started producer (``make_producer``); one that fails to start is stopped before the error is raised, so a
    retry loop never leaks its connections."""
    producer = make_producer(bootstrap, client_id=client_id)
    try:
        await producer.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await producer.stop()
        raise
    return producer


async def stop_producer(producer: AIOKafkaProducer | None, wait_seconds: float = 2.0) -> None:
    """Stop a producer, bounded: a broker that is gone never answers its goodbye."""
    if producer is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), wait_seconds)


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
