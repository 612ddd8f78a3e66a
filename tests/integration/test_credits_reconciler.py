"""Credits settle from the truth: open reservations are settled from the render's status, read from a real renders
API over HTTP (its own database, the same one credits uses here, as in a deployment's one cluster)."""

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.credits import service
from services.credits.models import SCHEMA as CREDITS_SCHEMA
from services.credits.models import ledger
from services.credits.reconciler import RECONCILED, Reconciler
from services.renders.config import Settings as RendersSettings
from services.renders.main import create_app as create_renders_app
from services.renders.models import SCHEMA as RENDERS_SCHEMA
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.internal_client import RendersClient
from shared.settings import ServiceSettings
from shared.testing.fixtures import migrated_database
from shared.testing.renders import insert_render
from shared.testing.servers import serve_in_thread

DEV = ServiceSettings(app_env="dev")


@pytest.fixture(scope="module")
def database_url_of_both(postgres_server_url: str) -> Iterator[str]:
    with migrated_database(postgres_server_url) as url:
        yield url


@pytest.fixture(scope="module")
def renders_url(
    database_url_of_both: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    settings = RendersSettings(
        app_env="dev",
        database_url=database_url_of_both,
        kafka_bootstrap_servers=kafka_bootstrap,
        storage_dir=str(tmp_path_factory.mktemp("renders-storage")),
    )
    with serve_in_thread(create_renders_app(settings)) as url:
        yield url


@pytest.fixture
async def credits_sessions(database_url_of_both: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(database_url_of_both, schema=CREDITS_SCHEMA)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def renders_db(database_url_of_both: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url_of_both, schema=RENDERS_SCHEMA)
    yield engine
    await engine.dispose()


async def add_render(engine: AsyncEngine, user_id: str, status: str) -> str:
    return (await insert_render(make_sessionmaker(engine), user_id=user_id, status=status)).id


async def reserve(sessions: async_sessionmaker[AsyncSession], user_id: str, *render_ids: str) -> None:
    async with unit_of_work(sessions) as session:
        await service.grant(session, user_id, 5 * len(render_ids), f"grant-{uuid.uuid4()}", "test")
    for render_id in render_ids:
        async with unit_of_work(sessions) as session:
            await service.reserve(session, user_id, render_id, 5)


async def settlements(sessions: async_sessionmaker[AsyncSession], render_id: str) -> list[str]:
    async with unit_of_work(sessions) as session:
        rows = await session.execute(
            select(ledger.c.kind).where(ledger.c.reference == render_id, ledger.c.kind != "reserve")
        )
        return [r[0] for r in rows]


async def test_open_reservations_are_settled_from_the_renders_status_page_by_page(
    renders_url: str, renders_db: AsyncEngine, credits_sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    # Renders still in progress come first (oldest reservations): a reconciler that re-read the same first page
    # every pass would never get past them.
    in_progress = [await add_render(renders_db, user, status) for status in ("pending", "processing", "processing")]
    completed = await add_render(renders_db, user, "completed")
    failed = await add_render(renders_db, user, "failed")
    canceled = await add_render(renders_db, user, "canceled")
    never_created = str(uuid.uuid4())
    await reserve(credits_sessions, user, *in_progress, completed, failed, canceled, never_created)

    renders = RendersClient(renders_url, caller="credits", settings=DEV)
    try:
        reconciler = Reconciler(credits_sessions, renders, older_than_seconds=0, page_size=2)
        await reconciler.reconcile()
        assert reconciler.cursor == 0, "a whole pass ends back at the start"
        await reconciler.reconcile()  # a second pass changes nothing
    finally:
        await renders.aclose()

    assert await settlements(credits_sessions, completed) == ["capture"]
    assert await settlements(credits_sessions, failed) == ["release"]
    assert await settlements(credits_sessions, canceled) == ["release"]
    assert await settlements(credits_sessions, never_created) == ["release"]
    for render_id in in_progress:
        assert await settlements(credits_sessions, render_id) == [], "a render in progress is left to its events"
    async with unit_of_work(credits_sessions) as session:
        figures = await service.summary(session, user)
    assert (figures.balance, figures.total_spent) == (5 * 3, 5), "3 still reserved, 1 spent, 3 back"


async def test_a_candidate_that_cannot_be_reconciled_does_not_stop_the_others(
    renders_url: str, renders_db: AsyncEngine, credits_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A reservation renders cannot answer for (a reference that is no render id: its internal API answers a plain
    404, not ``RENDER_NOT_FOUND``) is counted as an error and left alone; the pass goes on past it, so one bad
    candidate never holds the reservations after it."""
    user = f"user-{uuid.uuid4().hex[:8]}"
    odd = f"not/a-render-{uuid.uuid4().hex[:8]}"
    completed = await add_render(renders_db, user, "completed")
    await reserve(credits_sessions, user, odd, completed)
    renders = RendersClient(renders_url, caller="credits", settings=DEV)
    try:
        await Reconciler(credits_sessions, renders, older_than_seconds=0, page_size=1).reconcile()
    finally:
        await renders.aclose()
    assert await settlements(credits_sessions, odd) == []
    assert await settlements(credits_sessions, completed) == ["capture"]


async def test_only_render_not_found_means_never_created(
    renders_url: str, credits_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Any other 404 (here: a path the service does not have, as a misrouted call would get) releases nothing."""
    user = f"user-{uuid.uuid4().hex[:8]}"
    ghost = str(uuid.uuid4())
    await reserve(credits_sessions, user, ghost)
    wrong = RendersClient(renders_url + "/nowhere", caller="credits", settings=DEV)
    errors = RECONCILED.labels("error")._value.get()
    try:
        await Reconciler(credits_sessions, wrong, older_than_seconds=0).reconcile()
    finally:
        await wrong.aclose()
    assert RECONCILED.labels("error")._value.get() > errors, "counted as an error, not as never created"
    assert await settlements(credits_sessions, ghost) == []


async def test_recent_reservations_wait_for_their_events(
    renders_url: str, credits_sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    ghost = str(uuid.uuid4())
    await reserve(credits_sessions, user, ghost)
    renders = RendersClient(renders_url, caller="credits", settings=DEV)
    try:
        await Reconciler(credits_sessions, renders, older_than_seconds=3600).reconcile()
    finally:
        await renders.aclose()
    assert await settlements(credits_sessions, ghost) == []
