"""Every service's migrations apply to an empty database, re-apply as a no-op, and stay within their schema."""

import asyncpg

from shared.db import plain_dsn
from shared.migrations import SERVICES_WITH_SCHEMAS, upgrade


async def test_each_service_owns_its_schema_and_migrations_are_idempotent(isolated_database_url: str) -> None:
    upgrade(isolated_database_url)  # second time: nothing to do, nothing fails
    conn = await asyncpg.connect(plain_dsn(isolated_database_url))
    try:
        rows = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        triggers = await conn.fetch("SELECT event_object_schema FROM information_schema.triggers")
    finally:
        await conn.close()
    tables: dict[str, set[str]] = {}
    for row in rows:
        tables.setdefault(row["table_schema"], set()).add(row["table_name"])
    assert set(tables) == set(SERVICES_WITH_SCHEMAS), "nothing lands in public or a foreign schema"
    for schema in SERVICES_WITH_SCHEMAS:
        assert "alembic_version" in tables[schema]
    assert {"outbox"} <= tables["auth"]
    assert {"outbox", "processed_events"} <= tables["renders"]
    assert {"processed_events"} <= tables["credits"]
    assert {"outbox", "processed_events"} <= tables["webhooks"]
    assert {"processed_events"} <= tables["telemetry"]
    assert {r["event_object_schema"] for r in triggers} == {"auth", "renders", "webhooks"}
