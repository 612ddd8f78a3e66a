"""Kafka wiring of the gateway: every replica reads all of ``apikey.events`` to invalidate its caches at once.

What happened before a replica started is covered by its empty cache and by the deleted-users backfill from auth.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
import structlog
from aiokafka import ConsumerRecord
from pydantic import ValidationError

from services.gateway.authn import ApiKeyVerifier, Denylist, service_headers
from services.gateway.config import Settings
from shared.consumer import consumer_for, parse_event, per_record
from shared.events.contracts import ApiKeyRevokedV1, UserDeletedV1
from shared.events.envelope import CloudEvent
from shared.events.topics import APIKEY_EVENTS
from shared.faults import PoisonRecord

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
    """Reads every partition of ``apikey.events`` (a broadcast reader of the shared consumer layer: no group, so no
    rebalance wait and every replica sees every event). A fresh replica starts at the end (its caches are empty);
    after a broker outage it resumes where it was; when the broker comes back without its data it starts over from
    the beginning, so revocations the outboxes publish again are never skipped."""

    def __init__(self, settings: Settings, keys: ApiKeyVerifier, denylist: Denylist) -> None:
        self.keys = keys
        self.denylist = denylist
        self.consumer = consumer_for(
            settings, topics=[APIKEY_EVENTS], group=None, name="gateway", shape=per_record(self.handle)
        )

    @property
    def ready(self) -> asyncio.Event:
        return self.consumer.ready

    async def handle(self, record: ConsumerRecord) -> None:
        event = parse_event(record)
        try:
            apply_event(event, self.keys, self.denylist)
        except ValidationError as exc:
            raise PoisonRecord(f"{event.type} payload does not parse: {exc.error_count()} errors") from None

    async def run(self) -> None:
        """Run until cancelled (the consumer reconnects with backoff while the broker is away)."""
        await self.consumer.run()

    async def stop(self) -> None:
        await self.consumer.stop()


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
