"""What renders deletes on a timer: idempotency keys past the contract's window, and the files of old renders.

Files (input and output) of a render go ``RENDERS_FILE_RETENTION_DAYS`` after it ended; that is never shorter than a
download URL's validity (checked by the settings), so a link handed out still works until it expires. The row stays
(history, credits, telemetry) with ``files_deleted_at`` set and no output.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.renders.config import Settings
from services.renders.models import FINAL_STATES, IdempotencyKey, Render
from shared.retention import Purge
from shared.storage import Storage

FILES_PER_ROUND = 500


def _ago(seconds: float) -> object:
    return func.now() - func.make_interval(0, 0, 0, 0, 0, 0, seconds)


def purges(settings: Settings, storage: Storage) -> list[Purge]:
    async def idempotency_keys(session: AsyncSession) -> int:
        stale = col(IdempotencyKey.created_at) < _ago(settings.idempotency_ttl_seconds)
        result = await session.execute(delete(IdempotencyKey).where(stale))
        return int(getattr(result, "rowcount", 0) or 0)

    async def render_files(session: AsyncSession) -> int:
        renders = (
            (
                await session.execute(
                    select(Render)
                    .where(
                        col(Render.status).in_(FINAL_STATES),
                        col(Render.files_deleted_at).is_(None),
                        col(Render.completed_at) < _ago(settings.file_retention_days * 86400.0),
                    )
                    .order_by(col(Render.completed_at))
                    .limit(FILES_PER_ROUND)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        for render in renders:
            for key in (render.input_key, render.output_key):
                if key:
                    await storage.delete(key)
            render.output_key = None
            render.files_deleted_at = func.now()  # type: ignore[assignment]
            session.add(render)
        return len(renders)

    return [Purge("idempotency_keys", idempotency_keys), Purge("render_files", render_files)]
