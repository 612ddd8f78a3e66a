"""Business logic of renders: accept (validate, reserve, store, enqueue), read, list, cancel. Flushes only."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import structlog
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.renders import events
from services.renders.config import Settings
from services.renders.errors import (
    DomainError,
    IdempotencyConflictError,
    InvalidStateError,
    NotFoundError,
    PayloadTooLargeError,
)
from services.renders.models import (
    FINAL_STATES,
    IdempotencyKey,
    Project,
    Render,
    RenderAccepted,
    RenderPage,
    RenderStatus,
)
from services.renders.rendering import RendererRegistry, validate_upload
from services.renders.uploads import Submission
from shared.identity import Identity
from shared.internal_client import RENDER_NOT_FOUND, InternalClient
from shared.netguard import UnsafeUrlError, check_url
from shared.storage import Storage

log = structlog.stdlib.get_logger(__name__)

DEFAULT_SECONDS = {"standard": 5.0, "high": 10.0, "ultra": 20.0}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/jpg": "jpg", "image/webp": "webp"}


@dataclass
class RendersContext:
    settings: Settings
    storage: Storage
    registry: RendererRegistry
    credits: InternalClient


def to_status(render: Render, storage: Storage, url_ttl: int) -> RenderStatus:
    assert render.created_at is not None
    output_url = storage.signed_url(render.output_key, url_ttl) if render.output_key else None
    return RenderStatus(
        renderId=render.id,
        status=render.status,
        progress=render.progress,
        outputUrl=output_url,
        error=render.error,
        errorCode=render.error_code,
        processingTime=render.processing_time,
        creditsUsed=render.credits_used,
        quality=render.quality,
        aspectRatio=render.aspect_ratio,
        style=render.style,
        model=render.model,
        projectId=render.project_id,
        platform=render.platform,
        pluginVersion=render.plugin_version,
        createdAt=render.created_at,
        completedAt=render.completed_at,
    )


def request_hash(submission: Submission) -> str:
    fields = submission.fields.model_dump(mode="json")
    fields["image"] = hashlib.sha256(submission.image).hexdigest()
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


_ESTIMATES: dict[str, tuple[float, float]] = {}
ESTIMATE_CACHE_SECONDS = 30.0


async def estimated_seconds(session: AsyncSession, quality: str) -> float:
    """Median processing time of the last 50 completed renders of this quality (recomputed every 30 s per
    process: it moves slowly, and creates are the hot path), or a default before any."""
    cached = _ESTIMATES.get(quality)
    now = time.monotonic()
    if cached is not None and now - cached[1] < ESTIMATE_CACHE_SECONDS:
        return cached[0]
    value = await _median_processing_time(session, quality)
    _ESTIMATES[quality] = (value, now)
    return value


async def _median_processing_time(session: AsyncSession, quality: str) -> float:
    recent = (
        select(col(Render.processing_time))
        .where(col(Render.status) == "completed", col(Render.quality) == quality)
        .order_by(col(Render.completed_at).desc())
        .limit(50)
        .subquery()
    )
    median = (
        await session.execute(select(func.percentile_cont(0.5).within_group(recent.c.processing_time)))
    ).scalar_one_or_none()
    return round(float(median), 1) if median is not None else DEFAULT_SECONDS[quality]


async def _own_project(session: AsyncSession, user_id: str, project_id: str) -> Project:
    project = (
        await session.execute(select(Project).where(col(Project.id) == project_id, col(Project.user_id) == user_id))
    ).scalar_one_or_none()
    if project is None:
        raise NotFoundError("Project not found", details={"field": "projectId"})
    return project


async def _replay(session: AsyncSession, ctx: RendersContext, user_id: str, key: str, digest: str) -> RenderAccepted:
    """The answer an earlier request with the same key gave, or a conflict when the body differs."""
    row = (
        await session.execute(
            select(IdempotencyKey).where(col(IdempotencyKey.user_id) == user_id, col(IdempotencyKey.key) == key)
        )
    ).scalar_one()
    if row.request_hash != digest:
        raise IdempotencyConflictError(
            "This Idempotency-Key was used with a different request", details={"field": "Idempotency-Key"}
        )
    render = (await session.execute(select(Render).where(col(Render.id) == row.render_id))).scalar_one()
    return RenderAccepted(
        renderId=render.id,
        creditsCost=render.credits_cost,
        estimatedTime=await estimated_seconds(session, render.quality),
    )


async def _claim_idempotency_key(
    session: AsyncSession, ctx: RendersContext, user_id: str, key: str, digest: str, render_id: str
) -> bool:
    """Insert the key for this request; False if another request owns it (a concurrent duplicate waits here for
    the first one's transaction to finish, then sees its row)."""
    await session.execute(
        text(
            "DELETE FROM idempotency_keys WHERE user_id = :u AND key = :k "
            "AND created_at < now() - make_interval(secs => :t)"
        ),
        {"u": user_id, "k": key, "t": float(ctx.settings.idempotency_ttl_seconds)},
    )
    inserted = await session.execute(
        pg_insert(IdempotencyKey)
        .values(user_id=user_id, key=key, request_hash=digest, render_id=render_id)
        .on_conflict_do_nothing()
        .returning(col(IdempotencyKey.render_id))
    )
    return inserted.first() is not None


async def create_render(
    session: AsyncSession,
    ctx: RendersContext,
    identity: Identity,
    submission: Submission,
    idempotency_key: str | None,
    on_reserving: Callable[[str], None] = lambda _: None,
) -> RenderAccepted:
    assert identity.user_id is not None
    user_id, fields = identity.user_id, submission.fields
    model = ctx.registry.resolve(fields.model)
    if fields.callback_url is not None:
        try:
            check_url(str(fields.callback_url), allow_private=ctx.settings.allow_private_networks)
        except UnsafeUrlError as exc:
            raise DomainError(
                f"callback_url is not allowed: {exc}", details={"field": "callback_url", "reason": str(exc)}
            ) from exc
    if len(submission.image) > ctx.settings.max_upload_bytes:
        raise PayloadTooLargeError("Image larger than the upload limit")
    image = await asyncio.to_thread(
        validate_upload, submission.image, fields.uploadedImageType, max_pixels=ctx.settings.max_input_pixels
    )
    if fields.projectId:
        await _own_project(session, user_id, fields.projectId)
    render_id = str(uuid.uuid4())
    if idempotency_key is not None:
        digest = request_hash(submission)
        if not await _claim_idempotency_key(session, ctx, user_id, idempotency_key, digest, render_id):
            return await _replay(session, ctx, user_id, idempotency_key, digest)
    cost = ctx.settings.cost_of(fields.quality)
    input_key = f"renders/{render_id}/input.{EXTENSIONS[fields.uploadedImageType]}"
    render = Render(
        id=render_id,
        user_id=user_id,
        project_id=fields.projectId,
        quality=fields.quality,
        aspect_ratio=fields.aspectRatio,
        style=fields.style,
        model=model,
        prompt=fields.prompt,
        platform=identity.platform,
        plugin_version=identity.plugin_version,
        credits_cost=cost,
        input_key=input_key,
        input_type=fields.uploadedImageType,
        meta={
            "sourcePlatform": identity.platform,
            "pluginVersion": identity.plugin_version,
            "userAgent": identity.user_agent,
            "callbackUrl": str(fields.callback_url) if fields.callback_url else None,
            "requestId": structlog.contextvars.get_contextvars().get("request_id"),
            "inputWidth": image.width,
            "inputHeight": image.height,
        },
    )
    render.created_at = datetime.now(UTC)  # set here, so no read-back is needed for the event
    session.add(render)
    await session.flush()
    await events.status_changed(session, render)
    await events.job_requested(session, render)
    await ctx.storage.put(input_key, submission.image, fields.uploadedImageType)
    # Reserved last: everything that can refuse the request has run. A 402 here rolls the render back whole;
    # the caller releases the reservation if the transaction fails after this point (see ``release_orphan``).
    on_reserving(render_id)
    await ctx.credits.request(
        "POST", f"/internal/credits/{user_id}/reservations", json={"renderId": render_id, "credits": cost}
    )
    log.info("render_accepted", render_id=render_id, quality=fields.quality, model=model, platform=identity.platform)
    return RenderAccepted(
        renderId=render_id, creditsCost=cost, estimatedTime=await estimated_seconds(session, fields.quality)
    )


async def release_orphan(ctx: RendersContext, user_id: str, render_id: str) -> None:
    """Give back the credits of a render whose transaction did not commit (best effort, idempotent)."""
    try:
        await ctx.credits.request("POST", f"/internal/credits/{user_id}/reservations/{render_id}/release")
    except DomainError as exc:
        log.error("orphan_reservation_not_released", render_id=render_id, error_code=exc.error_code)


async def own_render(session: AsyncSession, user_id: str, render_id: str, *, lock: bool = False) -> Render:
    stmt = select(Render).where(col(Render.id) == render_id, col(Render.user_id) == user_id)
    render = (await session.execute(stmt.with_for_update() if lock else stmt)).scalar_one_or_none()
    if render is None:
        raise NotFoundError("Render not found")
    return render


async def render_status_name(session: AsyncSession, render_id: str) -> str:
    """Any user's render's status (internal callers only); ``RENDER_NOT_FOUND`` is how "it does not exist" is
    told apart from any other 404 (credits releases a reservation on that code alone)."""
    status = (await session.execute(select(col(Render.status)).where(col(Render.id) == render_id))).scalar_one_or_none()
    if status is None:
        raise DomainError("Render not found", status_code=404, error_code=RENDER_NOT_FOUND)
    return str(status)


def _encode_cursor(render: Render) -> str:
    assert render.created_at is not None
    raw = f"{render.created_at.isoformat()}|{render.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, render_id = raw.split("|", 1)
        return datetime.fromisoformat(created), render_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise DomainError("Invalid cursor", details={"field": "cursor", "reason": "malformed"}) from exc


async def list_renders(
    session: AsyncSession,
    ctx: RendersContext,
    user_id: str,
    *,
    status: str | None,
    project_id: str | None,
    limit: int,
    cursor: str | None,
) -> RenderPage:
    stmt = select(Render).where(col(Render.user_id) == user_id)
    if status:
        stmt = stmt.where(col(Render.status) == status)
    if project_id:
        stmt = stmt.where(col(Render.project_id) == project_id)
    if cursor:
        created, last_id = _decode_cursor(cursor)
        stmt = stmt.where(
            (col(Render.created_at) < created) | ((col(Render.created_at) == created) & (col(Render.id) < last_id))
        )
    rows = list(
        (await session.execute(stmt.order_by(col(Render.created_at).desc(), col(Render.id).desc()).limit(limit + 1)))
        .scalars()
        .all()
    )
    page, more = rows[:limit], len(rows) > limit
    ttl = ctx.settings.output_url_ttl_seconds
    return RenderPage(
        renders=[to_status(r, ctx.storage, ttl) for r in page],
        nextCursor=_encode_cursor(page[-1]) if more and page else None,
    )


async def cancel_render(session: AsyncSession, ctx: RendersContext, user_id: str, render_id: str) -> RenderStatus:
    """Pending or processing -> canceled (credits go back when credits sees ``render.canceled``)."""
    render = await own_render(session, user_id, render_id, lock=True)
    if render.status in FINAL_STATES:
        raise InvalidStateError(
            f"Render is already {render.status}", details={"status": render.status, "renderId": render.id}
        )
    render.status = "canceled"
    render.claim_token = None
    render.completed_at = datetime.now(UTC)
    session.add(render)
    await session.flush()
    await events.status_changed(session, render)
    log.info("render_canceled", render_id=render.id)
    return to_status(render, ctx.storage, ctx.settings.output_url_ttl_seconds)
