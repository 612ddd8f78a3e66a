"""What a render worker does with one job: claim the render (a lease), render it, store the output, settle it.

Exactly-once effects on an at-least-once queue: a claim is a conditional update that hands the render a fresh
``claim_token``; every later write (progress, completion, failure) requires that token. A redelivered job whose
render is finished is acknowledged and dropped; one whose worker died (its heartbeat lapsed) is claimed again and
redone; a render canceled mid-way loses its token, so its late output is discarded. Credits are settled by the
credits service from the events, idempotently, so nothing here can charge twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from services.renders import events
from services.renders.config import Settings
from services.renders.models import FINAL_STATES, Render
from services.renders.rendering import RendererRegistry, RenderFailure, RenderRequest
from shared.db import unit_of_work
from shared.storage import Storage

log = structlog.stdlib.get_logger(__name__)


class ClaimLost(Exception):
    """The render was canceled, timed out or reclaimed while this worker held it."""


@dataclass
class Claim:
    render_id: str
    token: str
    snapshot: Render


def _now() -> datetime:
    return datetime.now(UTC)


class JobProcessor:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        storage: Storage,
        registry: RendererRegistry,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.storage = storage
        self.registry = registry
        self._running: asyncio.Task[object] | None = None

    # --- claim ---------------------------------------------------------------------------------------------------
    async def claim(self, render_id: str) -> Claim | None:
        """Take the render, waiting out a live-looking lease; None when there is nothing (left) to do."""
        lease = timedelta(seconds=self.settings.lease_seconds)
        deadline = time.monotonic() + self.settings.lease_seconds * 2 + 1
        while True:
            async with unit_of_work(self.sessions) as session:
                render = (
                    await session.execute(select(Render).where(col(Render.id) == render_id).with_for_update())
                ).scalar_one_or_none()
                if render is None or render.status in FINAL_STATES:
                    return None
                heartbeat = render.heartbeat_at or render.started_at or _now()
                stale = render.status == "processing" and heartbeat < _now() - lease
                if render.status == "pending" or stale:
                    if render.attempts >= self.settings.max_attempts:
                        await self._fail(session, render, "RENDER_ATTEMPTS_EXHAUSTED", "Render failed after retries")
                        return None
                    first = render.status == "pending"
                    render.status = "processing"
                    render.claim_token = uuid.uuid4().hex
                    render.attempts += 1
                    render.started_at = render.started_at or _now()
                    render.heartbeat_at = _now()
                    render.progress = max(render.progress, 5)
                    session.add(render)
                    await session.flush()
                    if first:
                        await events.status_changed(session, render)
                    else:
                        log.warning("render_reclaimed", render_id=render.id, attempt=render.attempts)
                    return Claim(render.id, render.claim_token, render)
            if time.monotonic() > deadline:
                log.warning("render_lease_still_held", render_id=render_id)
                return None
            await asyncio.sleep(min(1.0, self.settings.lease_seconds / 3))

    # --- progress and heartbeat ----------------------------------------------------------------------------------
    async def _touch(self, claim: Claim, progress: int | None = None) -> None:
        values: dict[str, object] = {"heartbeat_at": _now()}
        if progress is not None:
            values["progress"] = max(0, min(99, progress))
        async with unit_of_work(self.sessions) as session:
            result = await session.execute(
                update(Render)
                .where(col(Render.id) == claim.render_id, col(Render.claim_token) == claim.token)
                .values(**values)
                .returning(col(Render.id))
            )
            if result.first() is None:
                raise ClaimLost(claim.render_id)
            if progress is not None:
                await session.execute(
                    events.notify_statement(), {"channel": events.STATUS_CHANNEL, "id": claim.render_id}
                )

    async def _heartbeat(self, claim: Claim) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                await self._touch(claim)
            except ClaimLost:
                return
            except Exception as exc:  # keep beating: one failed write must not let the lease lapse silently
                log.warning("render_heartbeat_failed", render_id=claim.render_id, error=type(exc).__name__)

    # --- the job ---------------------------------------------------------------------------------------------------
    async def process(self, render_id: str) -> None:
        claim = await self.claim(render_id)
        if claim is None:
            return
        structlog.contextvars.bind_contextvars(render_id=render_id)
        started = time.monotonic()
        beat = asyncio.create_task(self._heartbeat(claim))
        self._running = asyncio.current_task()
        try:
            output = await self._render_with_retries(claim)
            key = f"renders/{render_id}/output.png"
            await self.storage.put(key, output, "image/png")
            await self._complete(claim, key, time.monotonic() - started)
        except ClaimLost:
            log.info("render_claim_lost", render_id=render_id)
        except RenderFailure as exc:
            await self._settle_failure(claim, exc.error_code, str(exc))
        except Exception as exc:
            log.exception("render_crashed", render_id=render_id, error_type=type(exc).__name__)
            await self._settle_failure(claim, "RENDER_ERROR", "The renderer failed unexpectedly")
        except asyncio.CancelledError:
            # Shutdown past its grace: hand the render back at once (another worker redoes it), not as a failure.
            await asyncio.shield(self._release(claim))
            raise
        finally:
            self._running = None
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _release(self, claim: Claim) -> None:
        """Give up a claim without failing the render: its lease ends now and this attempt does not count."""
        try:
            async with unit_of_work(self.sessions) as session:
                released = await session.execute(
                    update(Render)
                    .where(col(Render.id) == claim.render_id, col(Render.claim_token) == claim.token)
                    .values(
                        heartbeat_at=datetime(1970, 1, 1, tzinfo=UTC),
                        attempts=func.greatest(col(Render.attempts) - 1, 0),
                    )
                    .returning(col(Render.id))
                )
                if released.first() is not None:
                    log.warning("render_released_on_shutdown", render_id=claim.render_id)
        except Exception as exc:  # the lease then lapses on its own: slower, equally safe
            log.warning("render_release_failed", render_id=claim.render_id, error=type(exc).__name__)

    async def abandon_in_flight(self) -> None:
        """SIGTERM past the grace period: stop the render in progress and release it (see ``_release``)."""
        running = self._running
        if running is not None and not running.done():
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running

    async def _render_with_retries(self, claim: Claim) -> bytes:
        render = claim.snapshot
        image = await self.storage.get(render.input_key)
        request = RenderRequest(
            image=image,
            image_type=render.input_type,
            prompt=render.prompt,
            quality=render.quality,  # type: ignore[arg-type]
            aspect_ratio=render.aspect_ratio,  # type: ignore[arg-type]
            style=render.style,  # type: ignore[arg-type]
            model=render.model,
        )
        renderer = self.registry.get(render.model)
        last_reported = [0]

        async def progress(percent: int, stage: str) -> None:
            if percent - last_reported[0] >= 5 or percent >= 99:
                last_reported[0] = percent
                await self._touch(claim, percent)

        for attempt in range(self.settings.provider_retries + 1):
            try:
                return await renderer.render(request, progress)
            except RenderFailure as exc:
                if not exc.retryable or attempt == self.settings.provider_retries:
                    raise
                log.warning("render_retry", error_code=exc.error_code, attempt=attempt + 1)
                await asyncio.sleep(2**attempt)
        raise AssertionError("unreachable")

    # --- settle ----------------------------------------------------------------------------------------------------
    async def _locked_if_still_ours(self, session: AsyncSession, claim: Claim) -> Render | None:
        render = (
            await session.execute(select(Render).where(col(Render.id) == claim.render_id).with_for_update())
        ).scalar_one_or_none()
        if render is None or render.status != "processing" or render.claim_token != claim.token:
            return None
        return render

    async def _complete(self, claim: Claim, output_key: str, seconds: float) -> None:
        async with unit_of_work(self.sessions) as session:
            render = await self._locked_if_still_ours(session, claim)
            if render is None:
                log.info("render_output_discarded", render_id=claim.render_id)
                return
            render.status = "completed"
            render.progress = 100
            render.output_key = output_key
            render.processing_time = round(seconds, 3)
            render.credits_used = render.credits_cost
            render.completed_at = _now()
            render.claim_token = None
            session.add(render)
            await session.flush()
            url = self.storage.signed_url(output_key, self.settings.output_url_ttl_seconds)
            await events.status_changed(session, render, output_url=url)
        log.info("render_completed", render_id=claim.render_id, seconds=round(seconds, 2))

    async def _settle_failure(self, claim: Claim, code: str, message: str) -> None:
        async with unit_of_work(self.sessions) as session:
            render = await self._locked_if_still_ours(session, claim)
            if render is not None:
                await self._fail(session, render, code, message)

    async def _fail(self, session: AsyncSession, render: Render, code: str, message: str) -> None:
        render.status = "failed"
        render.error_code = code
        render.error = message
        render.claim_token = None
        render.completed_at = _now()
        session.add(render)
        await session.flush()
        await events.status_changed(session, render)
        log.warning("render_failed", render_id=render.id, error_code=code)

    # --- watchdog ------------------------------------------------------------------------------------------------
    async def fail_stuck(self) -> int:
        """Fail renders processing for longer than the stuck timeout (hung renderer, or a job nobody redelivers)."""
        cutoff = _now() - timedelta(seconds=self.settings.stuck_timeout_seconds)
        async with unit_of_work(self.sessions) as session:
            stuck = (
                (
                    await session.execute(
                        select(Render)
                        .where(col(Render.status) == "processing", col(Render.started_at) < cutoff)
                        .with_for_update(skip_locked=True)
                        .limit(100)
                    )
                )
                .scalars()
                .all()
            )
            for render in stuck:
                await self._fail(session, render, "RENDER_TIMEOUT", "The render did not finish in time")
        return len(stuck)

    async def requeue_stale_pending(self) -> int:
        """Publish the job again for renders pending too long: a job message lost by the broker (an in-memory
        dev broker restarted, a topic deleted) must not strand a paid render. Duplicates are harmless: claims are
        conditional."""
        cutoff = _now() - timedelta(seconds=self.settings.pending_requeue_seconds)
        async with unit_of_work(self.sessions) as session:
            stale = (
                (
                    await session.execute(
                        select(Render)
                        .where(
                            col(Render.status) == "pending",
                            func.coalesce(col(Render.heartbeat_at), col(Render.created_at)) < cutoff,
                        )
                        .with_for_update(skip_locked=True)
                        .limit(100)
                    )
                )
                .scalars()
                .all()
            )
            for render in stale:
                render.heartbeat_at = _now()
                session.add(render)
                await events.job_requested(session, render, attempt=render.attempts + 1)
                log.warning("render_job_requeued", render_id=render.id)
        return len(stale)

    async def watchdog(self) -> None:
        while True:
            await asyncio.sleep(self.settings.watchdog_interval_seconds)
            try:
                await self.fail_stuck()
                await self.requeue_stale_pending()
            except Exception as exc:
                log.warning("watchdog_error", error=type(exc).__name__)
