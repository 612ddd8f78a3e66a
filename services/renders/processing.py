"""What a render worker does with one job: claim the render (a lease), render it, store the output, settle it.

Exactly-once effects on an at-least-once queue: a claim is a conditional update that hands the render a fresh
``claim_token``; every later write (progress, completion, failure) requires that token. A redelivered job whose
render is finished is acknowledged and dropped; so is one whose lease a live worker holds (the holder finishes it; if
it dies, the watchdog publishes the job again once the lease lapsed, and the next claim redoes it); a render canceled
mid-way loses its token, so its late output is discarded. Credits are settled by the credits service from the
events, idempotently, so nothing here can charge twice.

Failures: only the renderer's own refusal (``RenderFailure``) fails a render. The infrastructure being away (the
database, storage, the broker: ``shared.faults``) releases the render without counting the attempt and hands the
job back to the consumer layer, which retries it without limit. Any other error releases it counting the attempt;
the consumer retries it within its budget and a claim past ``max_attempts`` fails the render.

Every lease, heartbeat and cut-off is in database time (``now()``), never a host's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from services.renders import events
from services.renders.config import Settings
from services.renders.models import FINAL_STATES, Render, outbox
from services.renders.rendering import RendererRegistry, RenderFailure, RenderRequest
from shared.db import unit_of_work
from shared.events.topics import RENDER_JOBS
from shared.faults import TransientError, is_transient
from shared.storage import Storage, StorageError, StorageMissingError

log = structlog.stdlib.get_logger(__name__)


class ClaimLost(Exception):
    """The render was canceled, timed out or reclaimed while this worker held it."""


@dataclass
class Claim:
    render_id: str
    token: str
    snapshot: Render


def _seconds(value: float) -> object:
    """An interval for database-time comparisons (``now() - _seconds(n)``)."""
    return func.make_interval(0, 0, 0, 0, 0, 0, value)


def _storage_fault(exc: StorageError) -> Exception:
    """A missing object is the render's problem (it cannot succeed); any other storage failure is transient."""
    if isinstance(exc, StorageMissingError):
        return RenderFailure("The uploaded image is no longer available", error_code="RENDER_ERROR", retryable=False)
    return TransientError(f"storage: {exc}")


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
        self._abandoned: dict[str, tuple[str, bool]] = {}
        """Claims this process gave up but could not release (the database was away): its to take again, with
        whether that attempt counts (an infrastructure outage's does not)."""

    # --- claim ---------------------------------------------------------------------------------------------------
    async def claim(self, render_id: str) -> Claim | None:
        """Take the render; None when there is nothing to do here (final, or a live worker holds its lease)."""
        async with unit_of_work(self.sessions) as session:
            row = (
                await session.execute(select(Render, func.now()).where(col(Render.id) == render_id).with_for_update())
            ).first()
            if row is None:
                return None
            render, now = row
            if render.status in FINAL_STATES:
                self._abandoned.pop(render_id, None)
                return None
            heartbeat = render.heartbeat_at or render.started_at or now
            abandoned = self._abandoned.pop(render_id, None)
            ours = abandoned is not None and render.claim_token == abandoned[0]
            stale = heartbeat < now - timedelta(seconds=self.settings.lease_seconds) or ours
            if render.status == "processing" and not stale:
                log.info("render_lease_held_elsewhere", render_id=render_id)
                return None
            uncounted = ours and abandoned is not None and not abandoned[1]  # that attempt never got to count
            if not uncounted and render.attempts >= self.settings.max_attempts:
                await self._fail(session, render, now, "RENDER_ATTEMPTS_EXHAUSTED", "Render failed after retries")
                return None
            first = render.status == "pending"
            render.status = "processing"
            render.claim_token = uuid.uuid4().hex
            render.attempts += 0 if uncounted else 1
            render.started_at = now  # this attempt's start: the stuck timeout counts from it
            render.heartbeat_at = now
            render.progress = max(render.progress, 5)
            session.add(render)
            await session.flush()
            if first:
                await events.status_changed(session, render)
            else:
                log.warning("render_reclaimed", render_id=render.id, attempt=render.attempts)
            return Claim(render.id, render.claim_token, render)

    # --- progress and heartbeat ----------------------------------------------------------------------------------
    async def _touch(self, claim: Claim, progress: int | None = None) -> None:
        values: dict[str, object] = {"heartbeat_at": func.now()}
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
        """Do the job; raises (after releasing the render) when the consumer layer should try it again."""
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
            try:
                await self.storage.put(key, output, "image/png")
            except StorageError as exc:
                raise _storage_fault(exc) from exc
            await self._complete(claim, key, time.monotonic() - started)
        except ClaimLost:
            log.info("render_claim_lost", render_id=render_id)
        except RenderFailure as failure:
            try:
                await self._settle_failure(claim, failure.error_code, str(failure))
            except Exception as exc:  # recording the failure met the database away: the render stays to be redone
                await self._release(claim, count_attempt=not is_transient(exc))
                raise
        except Exception as exc:
            transient = is_transient(exc)
            # Infrastructure away: this attempt does not count. Anything else counts, and the consumer retries it
            # within its budget (a claim past max_attempts fails the render).
            await self._release(claim, count_attempt=not transient)
            if transient:
                log.warning("render_released_infrastructure_away", render_id=render_id, error=type(exc).__name__)
                raise TransientError(f"{type(exc).__name__}: {exc}") from exc
            log.exception("render_crashed", render_id=render_id, error_type=type(exc).__name__)
            raise
        except asyncio.CancelledError:
            # Shutdown past its grace: hand the render back at once (another worker redoes it), not as a failure.
            await asyncio.shield(self._release(claim, count_attempt=False))
            raise
        finally:
            self._running = None
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _release(self, claim: Claim, *, count_attempt: bool) -> None:
        """Give up a claim without failing the render: its lease ends now (another claim may take it at once)."""
        attempts = col(Render.attempts) if count_attempt else func.greatest(col(Render.attempts) - 1, 0)
        try:
            async with unit_of_work(self.sessions) as session:
                released = await session.execute(
                    update(Render)
                    .where(col(Render.id) == claim.render_id, col(Render.claim_token) == claim.token)
                    .values(heartbeat_at=datetime(1970, 1, 1, tzinfo=UTC), attempts=attempts)
                    .returning(col(Render.id))
                )
                if released.first() is not None:
                    log.warning("render_released", render_id=claim.render_id, attempt_counted=count_attempt)
        except Exception as exc:  # the database is away: remember the claim is ours to take again
            self._abandoned[claim.render_id] = (claim.token, count_attempt)
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
        try:
            image = await self.storage.get(render.input_key)
        except StorageError as exc:
            raise _storage_fault(exc) from exc
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
    async def _locked_if_still_ours(self, session: AsyncSession, claim: Claim) -> tuple[Render, datetime] | None:
        """The render (locked) and the database's time, while this claim still holds it."""
        row = (
            await session.execute(select(Render, func.now()).where(col(Render.id) == claim.render_id).with_for_update())
        ).first()
        if row is None or row[0].status != "processing" or row[0].claim_token != claim.token:
            return None
        return row[0], row[1]

    async def _complete(self, claim: Claim, output_key: str, seconds: float) -> None:
        async with unit_of_work(self.sessions) as session:
            held = await self._locked_if_still_ours(session, claim)
            if held is None:
                log.info("render_output_discarded", render_id=claim.render_id)
                return
            render, now = held
            render.status = "completed"
            render.progress = 100
            render.output_key = output_key
            render.processing_time = round(seconds, 3)
            render.credits_used = render.credits_cost
            render.completed_at = now
            render.claim_token = None
            session.add(render)
            await session.flush()
            url = self.storage.signed_url(output_key, self.settings.output_url_ttl_seconds)
            await events.status_changed(session, render, output_url=url, output_key=output_key)
        log.info("render_completed", render_id=claim.render_id, seconds=round(seconds, 2))

    async def _settle_failure(self, claim: Claim, code: str, message: str) -> None:
        async with unit_of_work(self.sessions) as session:
            held = await self._locked_if_still_ours(session, claim)
            if held is not None:
                await self._fail(session, held[0], held[1], code, message)

    async def _fail(self, session: AsyncSession, render: Render, now: datetime, code: str, message: str) -> None:
        render.status = "failed"
        render.error_code = code
        render.error = message
        render.claim_token = None
        render.completed_at = now
        session.add(render)
        await session.flush()
        await events.status_changed(session, render)
        log.warning("render_failed", render_id=render.id, error_code=code)

    # --- watchdog ------------------------------------------------------------------------------------------------
    async def fail_stuck(self) -> int:
        """Fail renders whose current attempt has run longer than the stuck timeout (a hung renderer)."""
        async with unit_of_work(self.sessions) as session:
            rows = (
                await session.execute(
                    select(Render, func.now())
                    .where(
                        col(Render.status) == "processing",
                        col(Render.started_at) < func.now() - _seconds(self.settings.stuck_timeout_seconds),
                        # Being worked on (a live lease): a render released while infrastructure was away, or
                        # whose worker died, is not stuck but waiting; the requeue gives it to a worker again.
                        col(Render.heartbeat_at) > func.now() - _seconds(self.settings.lease_seconds),
                    )
                    .with_for_update(skip_locked=True, of=Render)
                    .limit(100)
                )
            ).all()
            for render, now in rows:
                await self._fail(session, render, now, "RENDER_TIMEOUT", "The render did not finish in time")
        return len(rows)

    async def requeue_lost_jobs(self) -> int:
        """Publish the job again for a render nobody is working on: pending too long (a job message lost with a
        broker, a topic deleted) or processing with a lapsed lease (its worker died after a redelivered job was
        acknowledged because that lease still looked live). Never while a job of the render is still unsent, and at
        most once per lease (or pending) period; duplicates are harmless anyway: claims are conditional."""
        lease = _seconds(self.settings.lease_seconds)
        unsent_job = exists().where(
            outbox.c.sent_at.is_(None), outbox.c.topic == RENDER_JOBS, outbox.c.key == col(Render.id)
        )
        lost_pending = and_(
            col(Render.status) == "pending",
            func.coalesce(col(Render.requeued_at), col(Render.created_at))
            < func.now() - _seconds(self.settings.pending_requeue_seconds),
        )
        lapsed = and_(
            col(Render.status) == "processing",
            col(Render.heartbeat_at) < func.now() - lease,
            or_(col(Render.requeued_at).is_(None), col(Render.requeued_at) < func.now() - lease),
        )
        async with unit_of_work(self.sessions) as session:
            rows = (
                await session.execute(
                    select(Render, func.now())
                    .where(or_(lost_pending, lapsed), ~unsent_job)
                    .with_for_update(skip_locked=True, of=Render)
                    .limit(100)
                )
            ).all()
            for render, now in rows:
                render.requeued_at = now
                session.add(render)
                await events.job_requested(session, render, attempt=render.attempts + 1)
                log.warning("render_job_requeued", render_id=render.id, status=render.status)
        return len(rows)

    async def watchdog(self) -> None:
        while True:
            await asyncio.sleep(self.settings.watchdog_interval_seconds)
            try:
                await self.fail_stuck()
                await self.requeue_lost_jobs()
            except Exception as exc:
                log.warning("watchdog_error", error=type(exc).__name__)
