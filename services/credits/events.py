"""Kafka wiring of the credits service: its consumer, delegating to ``service``.

Consumer group ``credits`` on ``render.events``: a completed render spends its reservation, a failed or canceled
one returns it. Each event's effect commits together with its processed-event record (``shared.consumer``), so a
redelivered event has no second effect; the ledger's own idempotency by render id covers distinct events about the
same render, and the reconciler settles what an event never did.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.credits import service
from services.credits.config import Settings
from services.credits.models import processed_events
from shared.consumer import Consumer, consumer_for, idempotent, with_payload
from shared.events.contracts import RenderEventV1
from shared.events.envelope import CloudEvent
from shared.events.topics import RENDER_EVENTS

COMPLETED = "render.completed"
RELEASE_REASONS = {"render.failed": "Render failed", "render.canceled": "Render canceled"}
SETTLING_EVENTS = frozenset({COMPLETED, *RELEASE_REASONS})


async def settle(session: AsyncSession, event: CloudEvent, data: RenderEventV1) -> None:
    """Capture or release the render's reservation."""
    if event.type == COMPLETED:
        await service.capture(session, data.renderId)
    else:
        await service.release(session, data.renderId, RELEASE_REASONS[event.type])


def consumers(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> list[Consumer]:
    """The ``render.events`` consumer (``Runtime(consumers=...)`` builds it before starting)."""
    group = settings.consumer_group
    shape = idempotent(
        sessions, processed_events, with_payload(RenderEventV1, settle), group=group, event_types=SETTLING_EVENTS
    )
    return [consumer_for(settings, topics=[RENDER_EVENTS], group=group, shape=shape)]
