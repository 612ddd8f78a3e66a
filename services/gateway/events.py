"""Kafka wiring of the gateway: every replica reads all of ``apikey.events`` to invalidate its caches at once.

What happened before a replica started is covered by its empty cache and by the deleted-users backfill from auth.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.gateway.authn import ApiKeyVerifier, Denylist, service_headers
from services.gateway.config import Settings
from shared.events.contracts import ApiKeyRevokedV1, UserDeletedV1
from shared.events.envelope import CloudEvent
from shared.events.topics import APIKEY_EVENTS

log = structlog.stdlib.get_logger(__name__)


def apply_event(event: CloudEvent, keys: ApiKeyVerifier, denylist: Denylist) -> None:
    if event.type == "apikey.revoked":
        revoked = ApiKeyRevokedV1.model_validate(event.data)
        keys.revoked(revoked.keyHash, revoked.keyId)
        log.info("api_key_dropped_from_cache", key_id=revoked.keyId, event_id=event.id)
    elif event.type == "user.deleted":
        deleted = UserDeletedV1.model_validate(event.data)
        denylist.add(deleted.userId, event.time.timestamp())
        keys.drop_user(deleted.userId)
        log.info("user_tokens_refused", user_id=deleted.userId, event_id=event.id)


class KeyEventsConsumer:
    """Reads every partition of ``apikey.events`` by manual assignment (no group: no rebalance wait, and every
    replica sees every event), starting at the end when the replica starts and resuming where it was after a
    broker outage."""

    def __init__(self, settings: Settings, keys: ApiKeyVerifier, denylist: Denylist) -> None:
        self.settings = settings
        self.keys = keys
        self.denylist = denylist
        self.ready = asyncio.Event()
        self._positions: dict[TopicPartition, int] = {}

    async def run(self) -> None:
        """Run until cancelled; reconnect with backoff while the broker is away."""
        backoff = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                fetch_max_wait_ms=50,
                client_id="gateway",
            )
            try:
                await consumer.start()
                await self._assign(consumer)
                self.ready.set()
                backoff = 0.5
                async for record in consumer:
                    self._positions[TopicPartition(record.topic, record.partition)] = record.offset + 1
                    try:
                        apply_event(CloudEvent.from_kafka(list(record.headers), record.value), self.keys, self.denylist)
                    except ValueError as exc:
                        log.warning("key_event_unreadable", error=str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("key_events_consumer_retry", error=type(exc).__name__, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        await consumer.topics()  # fetch metadata
        partitions = consumer.partitions_for_topic(APIKEY_EVENTS)
        if not partitions:
            raise RuntimeError(f"topic {APIKEY_EVENTS} has no partitions yet")
        assigned = [TopicPartition(APIKEY_EVENTS, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        fresh = [tp for tp in assigned if tp not in self._positions]
        if fresh:
            await consumer.seek_to_end(*fresh)
        for tp in assigned:
            if tp in self._positions:
                consumer.seek(tp, self._positions[tp])


async def backfill_deleted_users(settings: Settings, session: aiohttp.ClientSession, denylist: Denylist) -> None:
    """Users deleted within one access-token lifetime before this replica started (retried until auth answers)."""
    since = (datetime.now(UTC) - timedelta(hours=1, minutes=5)).isoformat()
    delay = 0.5
    while True:
        try:
            async with session.get(
                settings.auth_url + "/internal/users/deleted",
                params={"since": since},
                headers=service_headers(settings),
            ) as response:
                response.raise_for_status()
                for user_id in orjson.loads(await response.read())["data"]["userIds"]:
                    denylist.add(user_id)
                return
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            log.info("deleted_users_backfill_retry", error=type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
