"""Events of the renders service, always through its outbox in the caller's transaction.

Every state change of a render publishes ``render.<status>`` on ``render.events`` (key = render id, so one render's
events stay ordered); an accepted render also publishes its job on ``render.jobs`` for the workers. A state change
also notifies ``render_status`` so server-sent-event streams in any API replica wake at once.
"""

from __future__ import annotations

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.renders.models import Render, outbox
from shared.events.contracts import RenderEventV1, RenderJobV1
from shared.events.envelope import CloudEvent
from shared.events.topics import RENDER_EVENTS, RENDER_JOBS
from shared.outbox import enqueue

SOURCE = "/services/renders"
STATUS_CHANNEL = "render_status"


def render_event_data(render: Render, output_url: str | None = None, output_key: str | None = None) -> RenderEventV1:
    return RenderEventV1(
        renderId=render.id,
        userId=render.user_id,
        status=render.status,
        quality=render.quality,
        style=render.style,
        aspectRatio=render.aspect_ratio,
        model=render.model,
        platform=render.platform,
        pluginVersion=render.plugin_version,
        projectId=render.project_id,
        creditsCost=render.credits_cost,
        creditsUsed=render.credits_used,
        outputUrl=output_url,
        outputKey=output_key,
        error=render.error,
        errorCode=render.error_code,
        processingTime=render.processing_time,
        callbackUrl=render.meta.get("callbackUrl"),
        createdAt=render.created_at,
    )


async def status_changed(
    session: AsyncSession, render: Render, output_url: str | None = None, output_key: str | None = None
) -> None:
    """``render.<status>`` for the render as it is now, plus the wake-up of SSE streams."""
    data = render_event_data(render, output_url, output_key)
    event = CloudEvent(
        source=SOURCE,
        type="render.created" if render.status == "pending" else f"render.{render.status}",
        subject=render.id,
        data=data.model_dump(mode="json", exclude_none=True),
    )
    await enqueue(session, outbox, RENDER_EVENTS, event)
    await session.execute(notify_statement(), {"channel": STATUS_CHANNEL, "id": render.id})


def notify_statement() -> TextClause:
    """Wakes the SSE streams of one render (delivered when the surrounding transaction commits)."""
    return text("SELECT pg_notify(:channel, :id)")


async def job_requested(session: AsyncSession, render: Render, attempt: int = 1) -> None:
    data = RenderJobV1(renderId=render.id, userId=render.user_id, attempt=attempt)
    event = CloudEvent(source=SOURCE, type="render.job.requested", subject=render.id, data=data.model_dump())
    await enqueue(session, outbox, RENDER_JOBS, event)
