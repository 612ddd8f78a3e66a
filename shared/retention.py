"""Retention: what a process deletes on a timer so its tables (and its storage) do not grow without bound.

Each :class:`Purge` is one statement-sized job over the process's own schema, run every ``RETENTION_INTERVAL_SECONDS``
by whichever replica gets there (they are idempotent deletes, so replicas running them at once is harmless).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import unit_of_work

log = structlog.stdlib.get_logger(__name__)

PURGED = Counter("plugin_retention_purged_total", "Rows (or files) removed by retention", ["schema", "what"])


@dataclass(frozen=True)
class Purge:
    what: str
    """What it removes, e.g. ``processed_events``: the metric label and the log line."""
    run: Callable[[AsyncSession], Awaitable[int]]
    """Deletes one round's worth in the caller's transaction; returns how many went."""


async def purge_once(sessions: async_sessionmaker[AsyncSession], schema: str, purges: Sequence[Purge]) -> int:
    total = 0
    for purge in purges:
        async with unit_of_work(sessions) as session:
            removed = await purge.run(session)
        if removed:
            PURGED.labels(schema, purge.what).inc(removed)
            log.info("retention_purged", schema=schema, what=purge.what, removed=removed)
        total += removed
    return total


async def run_retention(
    sessions: async_sessionmaker[AsyncSession], schema: str, purges: Sequence[Purge], interval_seconds: float
) -> None:
    """Every ``interval_seconds`` until cancelled; a failed round is logged and tried again next time."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await purge_once(sessions, schema, purges)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("retention_failed", schema=schema, error=f"{type(exc).__name__}: {exc}")
