"""Retention: what each service deletes on a timer, against a real PostgreSQL (and real files for storage)."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.credits.models import SCHEMA as CREDITS_SCHEMA
from services.credits.models import processed_events
from services.renders.config import Settings as RendersSettings
from services.renders.models import SCHEMA as RENDERS_SCHEMA
from services.renders.models import IdempotencyKey, Render
from services.renders.retention import purges
from services.telemetry.config import Settings as TelemetrySettings
from services.telemetry.events import Ingestor
from shared.consumer import forget_processed
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.retention import purge_once
from shared.storage import LocalStorage
from shared.testing.renders import insert_render

DAY = timedelta(days=1)


@pytest.fixture
async def renders_sessions(isolated_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(isolated_database_url, schema=RENDERS_SCHEMA)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def test_renders_forget_old_idempotency_keys_and_the_files_of_old_renders(
    renders_sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    settings = RendersSettings(app_env="dev", file_retention_days=30, output_url_ttl_seconds=86400)
    storage = LocalStorage(tmp_path, public_base_url="http://gw", signing_secret="s")
    now = datetime.now(UTC)
    old = await insert_render(
        renders_sessions, status="completed", completed_at=now - 31 * DAY, output_key="renders/old/output.png"
    )
    recent = await insert_render(
        renders_sessions, status="completed", completed_at=now - 29 * DAY, output_key="renders/recent/output.png"
    )
    running = await insert_render(renders_sessions, status="processing", started_at=now - 40 * DAY)
    for render in (old, recent, running):
        await storage.put(render.input_key, b"in", "image/png")
        if render.output_key:
            await storage.put(render.output_key, b"out", "image/png")
    async with unit_of_work(renders_sessions) as session:
        session.add(
            IdempotencyKey(user_id="u1", key="old", request_hash="h", render_id=old.id, created_at=now - 2 * DAY)
        )
        session.add(IdempotencyKey(user_id="u1", key="new", request_hash="h", render_id=old.id, created_at=now))

    assert await purge_once(renders_sessions, RENDERS_SCHEMA, purges(settings, storage)) == 2
    assert not await storage.exists(old.input_key)
    assert not await storage.exists("renders/old/output.png")
    for kept in (recent.input_key, "renders/recent/output.png", running.input_key):
        assert await storage.exists(kept), kept
    async with unit_of_work(renders_sessions) as session:
        rows = {r.id: r for r in (await session.execute(select(Render))).scalars()}
        keys = (await session.execute(select(IdempotencyKey.key))).scalars().all()  # type: ignore[call-overload]
    assert rows[old.id].files_deleted_at is not None
    assert rows[old.id].output_key is None, "no output URL for a file that is gone"
    assert rows[recent.id].files_deleted_at is None
    assert list(keys) == ["new"]
    assert await purge_once(renders_sessions, RENDERS_SCHEMA, purges(settings, storage)) == 0, "nothing twice"


def test_files_are_never_deleted_before_their_links_expire() -> None:
    with pytest.raises(ValueError, match="RENDERS_FILE_RETENTION_DAYS"):
        RendersSettings(app_env="dev", file_retention_days=0.5, output_url_ttl_seconds=86400)
    with pytest.raises(ValueError, match="idempotency_ttl_seconds"):
        RendersSettings(app_env="dev", idempotency_ttl_seconds=3600)


async def test_credits_forget_processed_event_ids_past_their_retention(isolated_database_url: str) -> None:
    engine = make_engine(isolated_database_url, schema=CREDITS_SCHEMA)
    sessions = make_sessionmaker(engine)
    try:
        async with unit_of_work(sessions) as session:
            await session.execute(
                processed_events.insert(),
                [
                    {"event_id": "old", "event_type": "t", "processed_at": datetime.now(UTC) - 15 * DAY},
                    {"event_id": "new", "event_type": "t", "processed_at": datetime.now(UTC) - 13 * DAY},
                ],
            )
        async with unit_of_work(sessions) as session:
            assert await forget_processed(session, processed_events, 14 * 86400) == 1
            left = (await session.execute(select(processed_events.c.event_id))).scalars().all()
        assert list(left) == ["new"]
    finally:
        await engine.dispose()


async def test_telemetry_forgets_minute_rollups_and_keeps_hourly_ones(isolated_database_url: str) -> None:
    ingestor = Ingestor(TelemetrySettings(app_env="dev", database_url=isolated_database_url, consumer_group="t"))
    pool = await ingestor.pool()
    old, recent = datetime.now(UTC) - 15 * DAY, datetime.now(UTC) - 13 * DAY
    try:
        for table in ("render_minutes", "render_hours"):
            column = "minute" if table == "render_minutes" else "hour"
            for at in (old, recent):
                await pool.execute(
                    f"INSERT INTO telemetry.{table} ({column}, platform, plugin_version, status, renders, credits) "
                    "VALUES ($1, 'revit', '1', 'completed', 1, 5)",
                    at.replace(second=0, microsecond=0),
                )
        await ingestor.purge()
        minutes = await pool.fetch("SELECT minute FROM telemetry.render_minutes")
        hours = await pool.fetch("SELECT hour FROM telemetry.render_hours")
    finally:
        await ingestor.stop()
    assert [r["minute"] for r in minutes] == [recent.replace(second=0, microsecond=0)]
    assert len(hours) == 2, "hourly rollups are kept"
