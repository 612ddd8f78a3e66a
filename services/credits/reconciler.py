"""Credits settle from the truth, not only from events: open reservations are checked against the render's status.

Events settle reservations within milliseconds; this covers every way an event can fail to: lost with a broker that
lost its data, dead-lettered, a render whose create answered an error after its COMMIT (renders then leaves the
reservation to us instead of refunding blindly), or a reservation whose render never committed. Every pass pages
through reservations left unsettled for longer than ``CREDITS_RECONCILE_AFTER_SECONDS`` with a cursor (so it never
reads the same page twice and reaches every candidate), asks renders for each render's status, and settles:

- ``completed`` → capture; ``failed`` / ``canceled`` → release;
- renders answers ``RENDER_NOT_FOUND`` (that code only, never any 404) → release: the render never came to exist;
- ``pending`` / ``processing`` → leave it: its events (or a later pass) settle it.

Settling is idempotent by render id (``service.capture`` / ``release``), so racing an event does nothing twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog
from prometheus_client import Counter
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.credits import service
from services.credits.models import ledger
from shared.db import unit_of_work
from shared.faults import is_transient
from shared.internal_client import RendersClient, RenderState

log = structlog.stdlib.get_logger(__name__)

RECONCILED = Counter(
    "plugin_credits_reconciled_total",
    "Open reservations the reconciler looked at, by what it did (captured/released: an event had not settled it)",
    ["outcome"],
)
NEVER_CREATED_REASON = "Render never created"
RELEASE_REASONS = {"failed": "Render failed", "canceled": "Render canceled"}


async def open_reservations(
    session: AsyncSession, after_id: int, older_than_seconds: float, limit: int
) -> list[tuple[int, str]]:
    """``(ledger id, render id)`` of reservations without a settlement, older than the cut-off (database time),
    after ``after_id``, oldest first."""
    settled = ledger.alias("settled")
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_seconds)
    rows = await session.execute(
        select(ledger.c.id, ledger.c.reference)
        .outerjoin(
            settled,
            and_(settled.c.reference == ledger.c.reference, settled.c.kind.in_(("capture", "release"))),
        )
        .where(ledger.c.kind == "reserve", ledger.c.id > after_id, ledger.c.created_at < cutoff, settled.c.id.is_(None))
        .order_by(ledger.c.id)
        .limit(limit)
    )
    return [(int(r[0]), str(r[1])) for r in rows]


async def settle_from(session: AsyncSession, render_id: str, state: RenderState | None) -> str:
    """Settle one reservation from its render's state; returns what was done."""
    if state is None:
        return "released" if await service.release(session, render_id, NEVER_CREATED_REASON) else "already_settled"
    if state.status == "completed":
        return "captured" if await service.capture(session, render_id) else "already_settled"
    if state.status in RELEASE_REASONS:
        released = await service.release(session, render_id, RELEASE_REASONS[state.status])
        return "released" if released else "already_settled"
    return "in_progress"


@dataclass
class Reconciler:
    sessions: async_sessionmaker[AsyncSession]
    renders: RendersClient
    older_than_seconds: float
    page_size: int = 100
    cursor: int = field(default=0)
    """The last ledger id looked at; back to 0 once a pass reached the end."""

    async def page(self) -> int:
        """Reconcile the next page; returns how many candidates it held (fewer than a page: the pass is over)."""
        async with unit_of_work(self.sessions) as session:
            candidates = await open_reservations(session, self.cursor, self.older_than_seconds, self.page_size)
        for ledger_id, render_id in candidates:
            try:
                state = await self.renders.render_state(render_id)
                async with unit_of_work(self.sessions) as session:
                    outcome = await settle_from(session, render_id, state)
            except Exception as exc:
                if is_transient(exc):
                    raise  # renders or the database away: the pass resumes here next time
                # This candidate's own problem: counted and logged, and the pass goes on past it.
                RECONCILED.labels("error").inc()
                log.error("reconcile_failed", render_id=render_id, error=f"{type(exc).__name__}: {exc}"[:300])
                self.cursor = ledger_id
                continue
            RECONCILED.labels(outcome).inc()
            if outcome in ("captured", "released"):
                log.warning(
                    "reservation_reconciled",
                    render_id=render_id,
                    outcome=outcome,
                    render_status=state.status if state else "never created",
                )
            self.cursor = ledger_id
        if len(candidates) < self.page_size:
            self.cursor = 0
        return len(candidates)

    async def reconcile(self) -> None:
        """One whole pass: page after page until the end of the candidates."""
        while await self.page() >= self.page_size:
            pass

    async def run(self, interval_seconds: float) -> None:
        """A pass every ``interval_seconds``; a pass cut short (renders or the database away) resumes at its cursor."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                level = log.info if is_transient(exc) else log.warning
                level("reconcile_interrupted", cursor=self.cursor, error=f"{type(exc).__name__}: {exc}")
