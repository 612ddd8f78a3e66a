"""Kafka wiring of the webhooks dispatcher: the ``render.events`` consumer, delegating to ``service.fan_out``.

Consumer group ``webhooks``. The delivery rows are written in the same transaction that records the event as
processed (``shared.consumer``), and the offset is committed after it: from then on delivery depends only on the
``deliveries`` table, never on the consumer's position.
"""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.webhooks import service
from services.webhooks.config import Settings
from services.webhooks.models import RENDER_EVENT_TYPES, processed_events
from shared.consumer import Consumer, consumer_for, idempotent, with_payload
from shared.events.contracts import RenderEventV1
from shared.events.envelope import CloudEvent
from shared.events.topics import RENDER_EVENTS

log = structlog.stdlib.get_logger(__name__)


async def deliver_render_event(session: AsyncSession, event: CloudEvent, data: RenderEventV1) -> None:
    scheduled = await service.fan_out(session, event, data.userId, data.callbackUrl)
    if scheduled:
        log.info("webhook_deliveries_scheduled", render_id=data.renderId, deliveries=scheduled)


def consumers(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> list[Consumer]:
    """The ``render.events`` consumer (``Runtime(consumers=...)`` builds it before starting)."""
    group = settings.consumer_group
    shape = idempotent(
        sessions,
        processed_events,
        with_payload(RenderEventV1, deliver_render_event),
        group=group,
        event_types=frozenset(RENDER_EVENT_TYPES),
    )
    return [consumer_for(settings, topics=[RENDER_EVENTS], group=group, shape=shape)]
