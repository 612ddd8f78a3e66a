"""A render create whose COMMIT fails under it (the API cannot know whether it committed) is not refunded blindly:
it answers 503, keeps the reservation, and credits' reconciler settles it from the render's real status."""

import uuid

import asyncpg
import httpx

from services.credits.models import SCHEMA as CREDITS_SCHEMA
from services.credits.reconciler import Reconciler
from shared.db import make_engine, make_sessionmaker, plain_dsn
from shared.internal_client import RendersClient
from shared.settings import ServiceSettings
from shared.testing.fixtures import Stack, sign_up
from shared.testing.renders import balance, submission

SECRET = ServiceSettings(app_env="dev").internal_identity_secret


async def ledger(conn: asyncpg.Connection, user_id: str) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT kind, reference FROM credits.ledger WHERE user_id = $1 AND kind <> 'grant' ORDER BY id", user_id
    )
    return [(r["kind"], r["reference"]) for r in rows]


async def test_a_create_whose_commit_fails_is_settled_by_the_reconciler(
    stack: Stack, gateway_client: httpx.AsyncClient
) -> None:
    user = await sign_up(gateway_client)
    marker = f"fail-at-commit-{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(plain_dsn(stack.env["DATABASE_URL"]))
    function = f"renders.{marker.replace('-', '_')}"
    await conn.execute(
        f"""CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.prompt = '{marker}' THEN RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END $$"""
    )
    # Checked at COMMIT: the transaction does everything, then its COMMIT fails, as a connection cut there would.
    await conn.execute(
        f"CREATE CONSTRAINT TRIGGER fail_at_commit AFTER INSERT ON renders.renders "
        f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {function}()"
    )
    try:
        response = await gateway_client.post(
            "/api/plugins/renders", headers=user.bearer, json=submission(prompt=marker)
        )
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["errorCode"] == "SERVICE_UNAVAILABLE"
        render_id = body["details"]["renderId"]
        assert await ledger(conn, user.user_id) == [("reserve", render_id)], "not refunded blindly"
    finally:
        await conn.execute("DROP TRIGGER fail_at_commit ON renders.renders")
        await conn.execute(f"DROP FUNCTION {function}()")

    engine = make_engine(stack.env["DATABASE_URL"], schema=CREDITS_SCHEMA)
    renders = RendersClient(stack.service_urls["renders"], caller="credits", secret=SECRET)
    try:
        await Reconciler(make_sessionmaker(engine), renders, older_than_seconds=0).reconcile()
    finally:
        await renders.aclose()
        await engine.dispose()
    try:
        assert await ledger(conn, user.user_id) == [("reserve", render_id), ("release", render_id)]
    finally:
        await conn.close()
    assert (await balance(gateway_client, user.bearer))["balance"] == 10
