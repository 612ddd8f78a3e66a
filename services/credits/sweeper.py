"""Releases reservations whose render never came to exist.

Renders reserves credits over HTTP before its own transaction commits. It releases them itself when that
transaction fails, but a crash in between would hold them for ever: no render, so no ``render.*`` event to settle
them. Old unsettled reservations are therefore checked against renders' internal API, and released when renders
answers that the render does not exist. A render that exists is left alone: its events settle it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.credits import service
from services.credits.models import ledger
from shared.db import unit_of_work
from shared.errors import DomainError
from shared.internal_client import InternalClient

log = structlog.stdlib.get_logger(__name__)
ORPHAN_REASON = "Render never created"


async def unsettled_reservations(session: AsyncSession, older_than: datetime, limit: int = 100) -> list[str]:
    settled = ledger.alias("settled")
    rows = await session.execute(
        select(ledger.c.reference)
        .outerjoin(
            settled,
            and_(settled.c.reference == ledger.c.reference, settled.c.kind.in_(("capture", "release"))),
        )
        .where(ledger.c.kind == "reserve", ledger.c.created_at < older_than, settled.c.id.is_(None))
        .order_by(ledger.c.id)
        .limit(limit)
    )
    return [r[0] for r in rows]


async def sweep(sessions: async_sessionmaker[AsyncSession], renders: InternalClient, older_than_seconds: float) -> int:
    """One pass; returns how many reservations were released."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
    async with unit_of_work(sessions) as session:
        candidates = await unsettled_reservations(session, cutoff)
    released = 0
    for render_id in candidates:
        try:
            await renders.request("GET", f"/internal/renders/{render_id}")
            continue  # it exists: its own events will settle it
        except DomainError as exc:
            if exc.status_code != 404:
                log.warning("orphan_check_failed", render_id=render_id, error_code=exc.error_code)
                continue
        async with unit_of_work(sessions) as session:
            if await service.release(session, render_id, ORPHAN_REASON):
                released += 1
                log.warning("orphan_reservation_released", render_id=render_id)
    return released


async def run(
    sessions: async_sessionmaker[AsyncSession], renders: InternalClient, older_than_seconds: float, interval: float
) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await sweep(sessions, renders, older_than_seconds)
        except Exception as exc:
            log.warning("orphan_sweep_error", error=type(exc).__name__)
