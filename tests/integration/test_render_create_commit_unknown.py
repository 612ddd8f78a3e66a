"""A render create's COMMIT that fails: refused by the server (certainly rolled back) it is refunded at once; cut
off (the API cannot know whether it committed) it is not refunded blindly: it answers 503, keeps the reservation,
and credits' reconciler settles it from the render's real status."""

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from services.credits.models import SCHEMA as CREDITS_SCHEMA
from services.credits.reconciler import Reconciler
from shared.db import make_engine, make_sessionmaker, plain_dsn
from shared.internal_client import RendersClient
from shared.settings import ServiceSettings
from shared.testing.fixtures import PluginUser, Stack, sign_up
from shared.testing.renders import balance, submission

DEV = ServiceSettings(app_env="dev")
REFUSE = "RAISE EXCEPTION 'refused at commit'"
CUT_OFF = "PERFORM pg_terminate_backend(pg_backend_pid())"
"""The server ends the session in the middle of the COMMIT: the client sees its connection die, as on a network
cut or a crash, and cannot know the outcome (here the transaction did not commit)."""


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(plain_dsn(stack.env["DATABASE_URL"]))
    yield conn
    await conn.close()


async def ledger(conn: asyncpg.Connection, user_id: str) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT kind, reference FROM credits.ledger WHERE user_id = $1 AND kind <> 'grant' ORDER BY id", user_id
    )
    return [(r["kind"], r["reference"]) for r in rows]


async def create_failing_at_commit(
    client: httpx.AsyncClient, db: asyncpg.Connection, user: PluginUser, action: str
) -> httpx.Response:
    """A render create whose COMMIT meets ``action`` (a deferred trigger, checked at COMMIT after all the work)."""
    marker = f"commit_{uuid.uuid4().hex[:8]}"
    await db.execute(
        f"""CREATE FUNCTION renders.{marker}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.prompt = '{marker}' THEN {action}; END IF; RETURN NULL; END $$"""
    )
    await db.execute(
        f"CREATE CONSTRAINT TRIGGER {marker} AFTER INSERT ON renders.renders "
        f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION renders.{marker}()"
    )
    try:
        return await client.post("/api/plugins/renders", headers=user.bearer, json=submission(prompt=marker))
    finally:
        await db.execute(f"DROP TRIGGER {marker} ON renders.renders")
        await db.execute(f"DROP FUNCTION renders.{marker}()")


async def test_a_commit_the_server_refused_is_refunded_at_once(
    gateway_client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user = await sign_up(gateway_client)
    response = await create_failing_at_commit(gateway_client, db, user, REFUSE)
    assert response.status_code == 503, response.text
    assert response.json()["errorCode"] == "SERVICE_UNAVAILABLE"
    [(reserved, render_id), released] = await ledger(db, user.user_id)
    assert (reserved, released) == ("reserve", ("release", render_id))
    assert (await balance(gateway_client, user.bearer))["balance"] == 10


async def test_a_commit_cut_off_is_settled_by_the_reconciler(
    stack: Stack, gateway_client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user = await sign_up(gateway_client)
    response = await create_failing_at_commit(gateway_client, db, user, CUT_OFF)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["errorCode"] == "SERVICE_UNAVAILABLE"
    render_id = body["details"]["renderId"]
    assert await ledger(db, user.user_id) == [("reserve", render_id)], "not refunded blindly"

    engine = make_engine(stack.env["DATABASE_URL"], schema=CREDITS_SCHEMA)
    renders = RendersClient(stack.service_urls["renders"], caller="credits", settings=DEV)
    try:
        await Reconciler(make_sessionmaker(engine), renders, older_than_seconds=0).reconcile()
    finally:
        await renders.aclose()
        await engine.dispose()
    assert await ledger(db, user.user_id) == [("reserve", render_id), ("release", render_id)]
    assert (await balance(gateway_client, user.bearer))["balance"] == 10
