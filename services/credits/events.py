"""Kafka wiring of the credits service: subscribers only, delegating to ``service``.

Consumer group ``credits`` on ``render.events``: a completed render spends its reservation, a failed or canceled
one returns it. Each event's effect commits together with its processed-event record (``shared.consumer``), so a
redelivered event has no second effect; the ledger's own idempotency by render id covers distinct events about the
same render.
"""

from __future__ import annotations

from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.credits import service
from services.credits.models import processed_events
from shared.consumer import subscribe_idempotent, with_payload
from shared.events.contracts import RenderEventV1
from shared.events.envelope import CloudEvent
from shared.events.topics import RENDER_EVENTS

CONSUMER_GROUP = "credits"
COMPLETED = "render.completed"
RELEASE_REASONS = {"render.failed": "Render failed", "render.canceled": "Render canceled"}
SETTLING_EVENTS = frozenset({COMPLETED, *RELEASE_REASONS})


async def settle(session: AsyncSession, event: CloudEvent, data: RenderEventV1) -> None:
    """Capture or release the render's reservation."""
    if event.type == COMPLETED:
        await service.capture(session, data.renderId)
    else:
        await service.release(session, data.renderId, RELEASE_REASONS[event.type])


def wire(broker: KafkaBroker, sessions: async_sessionmaker[AsyncSession], group: str = CONSUMER_GROUP) -> None:
    """Register the ``render.events`` subscriber (``Runtime(subscribers=...)`` calls this before starting)."""
    subscribe_idempotent(
        broker,
        RENDER_EVENTS,
        group=group,
        sessions=sessions,
        table=processed_events,
        effect=with_payload(RenderEventV1, settle),
        event_types=SETTLING_EVENTS,
    )
