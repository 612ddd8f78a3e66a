"""Migration 0004 on existing rows: emails normalised, colliding spellings kept and flagged (nothing lost),
API keys numbered in creation order; the downgrade gives every row its old spelling back."""

from collections.abc import Iterator

import asyncpg
import pytest
from alembic import command

from shared.db import plain_dsn
from shared.migrations import alembic_config
from shared.testing.fixtures import empty_database


@pytest.fixture
def auth_at_0003(postgres_server_url: str) -> Iterator[str]:
    """A database of this test with auth's schema at revision 0003 (before normalisation)."""
    with empty_database(postgres_server_url) as url:
        command.upgrade(alembic_config("auth", url), "0003")
        yield url


ROWS = [
    # id, email as stored by the old code (lower-cased, otherwise as typed), created, deleted
    ("u-old", "bob@example.com", "2024-01-01", None),
    ("u-full", "\uff42\uff4f\uff42@example.com", "2024-02-01", None),  # fullwidth: the same address
    ("u-dom", "bob@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "2024-03-01", None),
    ("u-gone", "carol@example.com", "2023-01-01", "2023-06-01"),  # oldest, but deleted
    ("u-live", "carol@example.com.", "2024-01-01", None),
    ("u-idn", "dora@b\u00fccher.example", "2024-01-01", None),
    ("u-plain", "erin@example.com", "2024-01-01", None),
    ("u-bad", "not an address", "2024-01-01", None),
]


async def test_upgrade_normalises_and_keeps_collisions_flagged(auth_at_0003: str) -> None:
    conn = await asyncpg.connect(plain_dsn(auth_at_0003))
    try:
        for user_id, email, created, deleted in ROWS:
            await conn.execute(
                "INSERT INTO auth.users (id, email, password_hash, created_at, deleted_at)"
                " VALUES ($1, $2, 'h', $3::text::timestamptz, $4::text::timestamptz)",
                user_id,
                email,
                created,
                deleted,
            )
        for i, created in enumerate(["2024-05-01", "2024-04-01", "2024-06-01"]):
            await conn.execute(
                "INSERT INTO auth.plugin_api_keys (id, user_id, name, key_hash, key_prefix, scopes, created_at)"
                " VALUES ($1, 'u-old', 'k', $2, 'rk_live_x', '{renders:read}', $3::text::timestamptz)",
                f"k{i}",
                f"hash{i}",
                created,
            )
        command.upgrade(alembic_config("auth", auth_at_0003), "head")
        rows = {
            r["id"]: (r["email"], r["email_original"], r["email_review"])
            for r in await conn.fetch("SELECT id, email, email_original, email_review FROM auth.users")
        }
        assert len(rows) == len(ROWS), "no row is lost"
        assert rows["u-old"] == ("bob@example.com", None, None)  # the oldest keeps the address
        assert rows["u-full"] == (
            "conflict:u-full:bob@example.com",
            "\uff42\uff4f\uff42@example.com",
            "collision:u-old",
        )
        assert rows["u-dom"][0] == "conflict:u-dom:bob@example.com"
        assert rows["u-dom"][2] == "collision:u-old"
        # An active account wins over an older deleted one.
        assert rows["u-live"] == ("carol@example.com", "carol@example.com.", None)
        assert rows["u-gone"] == ("conflict:u-gone:carol@example.com", "carol@example.com", "collision:u-live")
        assert rows["u-idn"] == ("dora@xn--bcher-kva.example", "dora@b\u00fccher.example", None)
        assert rows["u-plain"] == ("erin@example.com", None, None)
        assert rows["u-bad"] == ("not an address", None, "unnormalizable")
        keys = await conn.fetch("SELECT id, seq FROM auth.plugin_api_keys ORDER BY seq")
        assert [k["id"] for k in keys] == ["k1", "k0", "k2"]  # numbered by creation time
        await conn.execute(
            "INSERT INTO auth.plugin_api_keys (id, user_id, name, key_hash, key_prefix, scopes)"
            " VALUES ('k-new', 'u-old', 'k', 'hash-new', 'rk_live_y', '{renders:read}')"
        )
        assert await conn.fetchval("SELECT seq FROM auth.plugin_api_keys WHERE id = 'k-new'") == 4

        command.downgrade(alembic_config("auth", auth_at_0003), "0003")
        restored = {r["id"]: r["email"] for r in await conn.fetch("SELECT id, email FROM auth.users")}
        assert restored == {user_id: email for user_id, email, _, _ in ROWS}
    finally:
        await conn.close()
