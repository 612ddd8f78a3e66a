"""The render worker's safety nets against a real database and broker: watchdog, requeue, attempts, DLQ."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from services.renders.config import Settings
from services.renders.models import SCHEMA, Render, outbox
from services.renders.processing import JobProcessor
from services.renders.rendering import RendererRegistry
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.events.envelope import CloudEvent
from shared.faults import TransientError
from shared.storage import LocalStorage
from shared.testing.fixtures import Stack
from shared.testing.kafka import read_topic
from shared.testing.renders import insert_render


@pytest.fixture
async def sessions(isolated_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(isolated_database_url, schema=SCHEMA)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def processor(sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> JobProcessor:
    settings = Settings(app_env="dev", stuck_timeout_seconds=600, pending_requeue_seconds=60, max_attempts=3)
    storage = LocalStorage(tmp_path, public_base_url="http://gw", signing_secret="s")
    return JobProcessor(settings, sessions, storage, RendererRegistry())


async def add_render(sessions: async_sessionmaker[AsyncSession], **values: Any) -> str:
    return (await insert_render(sessions, **values)).id


async def state(sessions: async_sessionmaker[AsyncSession], render_id: str) -> tuple[Render, list[str]]:
    async with unit_of_work(sessions) as session:
        render = (await session.execute(select(Render).where(col(Render.id) == render_id))).scalar_one()
        types = (
            (
                await session.execute(
                    select(outbox.c.headers["ce_type"].astext).where(outbox.c.key == render_id).order_by(outbox.c.id)
                )
            )
            .scalars()
            .all()
        )
    return render, list(types)


async def test_watchdog_fails_renders_stuck_in_processing(
    sessions: async_sessionmaker[AsyncSession], processor: JobProcessor
) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    stuck = await add_render(sessions, status="processing", started_at=long_ago, heartbeat_at=datetime.now(UTC))
    fresh = await add_render(sessions, status="processing", started_at=datetime.now(UTC))
    released = await add_render(  # released while infrastructure was away: waiting, not stuck
        sessions, status="processing", started_at=long_ago, heartbeat_at=datetime(1970, 1, 1, tzinfo=UTC)
    )
    assert await processor.fail_stuck() == 1
    render, types = await state(sessions, stuck)
    assert render.status == "failed"
    assert render.error_code == "RENDER_TIMEOUT"
    assert types == ["render.failed"]
    assert (await state(sessions, fresh))[0].status == "processing"
    assert (await state(sessions, released))[0].status == "processing"


async def test_pending_renders_whose_job_was_lost_are_requeued_once_per_interval(
    sessions: async_sessionmaker[AsyncSession], processor: JobProcessor
) -> None:
    stale = await add_render(sessions, status="pending", created_at=datetime.now(UTC) - timedelta(minutes=5))
    recent = await add_render(sessions, status="pending")
    assert await processor.requeue_lost_jobs() == 1
    assert await processor.requeue_lost_jobs() == 0, "requeued again before the interval passed"
    assert (await state(sessions, stale))[1] == ["render.job.requested"]
    assert (await state(sessions, recent))[1] == []


async def test_a_lapsed_lease_gets_its_job_again_and_a_live_one_does_not(
    sessions: async_sessionmaker[AsyncSession], processor: JobProcessor
) -> None:
    """A redelivered job meeting a live lease is acknowledged (below); if that holder then dies, the watchdog is
    what publishes the job again, once the lease lapsed, and not twice while the first is still unsent."""
    lapsed = await add_render(
        sessions, status="processing", claim_token="dead", heartbeat_at=datetime.now(UTC) - timedelta(minutes=2)
    )
    live = await add_render(sessions, status="processing", claim_token="alive", heartbeat_at=datetime.now(UTC))
    assert await processor.requeue_lost_jobs() == 1
    assert await processor.requeue_lost_jobs() == 0, "a job of it is still unsent"
    assert (await state(sessions, lapsed))[1] == ["render.job.requested"]
    assert (await state(sessions, live))[1] == []


async def test_a_redelivered_job_whose_lease_is_live_is_acknowledged_at_once(
    sessions: async_sessionmaker[AsyncSession], processor: JobProcessor
) -> None:
    render_id = await add_render(sessions, status="processing", claim_token="alive", heartbeat_at=datetime.now(UTC))
    started = datetime.now(UTC)
    assert await processor.claim(render_id) is None
    assert datetime.now(UTC) - started < timedelta(seconds=5), "waited for the lease instead of acknowledging"
    render, _ = await state(sessions, render_id)
    assert (render.status, render.claim_token, render.attempts) == ("processing", "alive", 0)


class AwayStorage(LocalStorage):
    """Storage that is down: every read fails as a broken connection would."""

    async def get(self, key: str) -> bytes:
        raise ConnectionResetError("storage unreachable")


async def test_infrastructure_away_releases_the_render_without_counting_the_attempt(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    settings = Settings(app_env="dev", max_attempts=3)
    storage = AwayStorage(tmp_path, public_base_url="http://gw", signing_secret="s")
    processor = JobProcessor(settings, sessions, storage, RendererRegistry())
    render_id = await add_render(sessions, status="pending")
    for _ in range(5):  # more tries than max_attempts: none of them counts, none fails the render
        with pytest.raises(TransientError):
            await processor.process(render_id)
    render, types = await state(sessions, render_id)
    assert render.status == "processing", "released for another attempt, never failed"
    assert render.attempts == 0
    assert types == ["render.processing"]
    assert await processor.claim(render_id) is not None, "released: claimable at once"


async def test_a_render_out_of_attempts_fails_instead_of_looping(
    sessions: async_sessionmaker[AsyncSession], processor: JobProcessor
) -> None:
    render_id = await add_render(sessions, status="pending", attempts=3)
    assert await processor.claim(render_id) is None
    render, types = await state(sessions, render_id)
    assert render.status == "failed"
    assert render.error_code == "RENDER_ATTEMPTS_EXHAUSTED"
    assert types == ["render.failed"]


async def test_finished_renders_are_never_claimed_again(
    sessions: async_sessionmaker[AsyncSession], processor: JobProcessor
) -> None:
    for status in ("completed", "failed", "canceled"):
        render_id = await add_render(sessions, status=status)
        assert await processor.claim(render_id) is None
        assert (await state(sessions, render_id))[0].status == status


async def test_unreadable_job_goes_to_the_dead_letter_topic(stack: Stack) -> None:
    bootstrap = stack.env["KAFKA_BOOTSTRAP_SERVERS"]
    marker = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait("render.jobs", b"not a cloud event " + marker, key=marker)
        valid_shape = CloudEvent(source="/tests", type="render.job.requested", subject="x", data={"nope": 1})
        await producer.send_and_wait(
            "render.jobs", valid_shape.kafka_value(), key=marker, headers=valid_shape.kafka_headers()
        )
    finally:
        await producer.stop()
    records = [
        r for r in await read_topic(bootstrap, "render-workers.dlq", expected=2, wait_seconds=30) if r.key == marker
    ]
    assert len(records) == 2, "each poison record dead-lettered once, at once"
    headers = [{k: v.decode() for k, v in r.headers} for r in records]
    assert all(h["x-dlq-group"] == "render-workers" and h["x-dlq-topic"] == "render.jobs" for h in headers)
    assert headers[0]["x-dlq-error"].startswith("PoisonRecord: not a CloudEvent")
    assert headers[1]["x-dlq-error"].startswith("PoisonRecord: unreadable job")
    assert records[0].value == b"not a cloud event " + marker, "the original value, unchanged"
