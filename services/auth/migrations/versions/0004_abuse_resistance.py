"""Abuse resistance: emails in canonical form, a per-address sign-in failure record, API keys in creation order.

Revision ID: 0004
Revises: 0003

Every ``users.email`` is rewritten to ``shared.emails.normalize_email`` form, so each address is one account.

Collision policy (two or more existing rows normalise to one address) — nothing is deleted:

- the row that keeps the address is the first by (active before soft-deleted, oldest ``created_at``, then ``id``):
  an account somebody can still sign in to never loses its address to a deleted one;
- every other row keeps all its data and its credentials, but its ``email`` becomes
  ``conflict:<its id>:<canonical address>`` (not a valid address, so nobody can sign in with or sign up as it),
  ``email_original`` holds its spelling before the migration and ``email_review`` says
  ``collision:<id of the row that kept the address>``. An operator finds them with
  ``SELECT id, email_original, email_review FROM auth.users WHERE email_review IS NOT NULL`` and resolves each
  (merge by hand, or give it back a distinct address).
- a row whose address cannot be normalised at all keeps its email unchanged and gets ``email_review =
  'unnormalizable'`` (its owner cannot sign in until an operator fixes it; no such row was possible under the old
  ``EmailStr`` validation, this only guards hand-inserted data).

Every row whose email changed records its previous spelling in ``email_original``. The downgrade restores those
spellings and drops the new columns and table.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from shared.emails import InvalidEmailError, normalize_email
from shared.migrations import timestamp

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _canonical(email: str) -> str | None:
    try:
        return normalize_email(email)
    except InvalidEmailError:
        return None


def plan_emails(rows: list[tuple[str, str, datetime | None, datetime | None]]) -> dict[str, tuple[str, str | None]]:
    """``{id: (new email, review note)}`` for every row that must change; ``rows`` are (id, email, created, deleted)."""
    groups: dict[str, list[tuple[str, str, datetime | None, datetime | None]]] = {}
    changes: dict[str, tuple[str, str | None]] = {}
    for row in rows:
        canonical = _canonical(row[1])
        if canonical is None:
            changes[row[0]] = (row[1], "unnormalizable")
        else:
            groups.setdefault(canonical, []).append(row)
    for canonical, members in groups.items():
        members.sort(key=lambda r: (r[3] is not None, r[2] or datetime.max.replace(tzinfo=UTC), r[0]))
        keeper = members[0]
        if keeper[1] != canonical:
            changes[keeper[0]] = (canonical, None)
        for other in members[1:]:
            changes[other[0]] = (f"conflict:{other[0]}:{canonical}", f"collision:{keeper[0]}")
    return changes


def upgrade() -> None:
    op.add_column("users", sa.Column("email_original", sa.Text))
    op.add_column("users", sa.Column("email_review", sa.Text))
    bind = op.get_bind()
    rows = [
        (r.id, r.email, r.created_at, r.deleted_at)
        for r in bind.execute(sa.text("SELECT id, email, created_at, deleted_at FROM users FOR UPDATE"))
    ]
    changes = plan_emails(rows)
    if changes:
        params = [
            {"id": user_id, "email": email, "review": review, "tmp": f"migrating:{user_id}"}
            for user_id, (email, review) in changes.items()
        ]
        # Two passes: first every changing row moves out of the way, so the unique index never sees a transient
        # duplicate whatever the order of the updates.
        bind.execute(
            sa.text("UPDATE users SET email_original = email, email = :tmp WHERE id = :id"),
            params,
        )
        bind.execute(sa.text("UPDATE users SET email = :email, email_review = :review WHERE id = :id"), params)
        # An unnormalizable row keeps its email: it did not change, so it keeps no "original" either.
        bind.execute(sa.text("UPDATE users SET email_original = NULL WHERE email_original = email"))

    op.create_table(
        "signin_failures",
        sa.Column("email_key", sa.Text, primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        timestamp("locked_until"),
        timestamp("last_failure_at", False, True),
    )
    op.create_index("ix_signin_failures_last_failure_at", "signin_failures", ["last_failure_at"])

    # Creation order for the GET /keys cursor: existing keys numbered by (created_at, id), new ones by the identity.
    op.add_column("plugin_api_keys", sa.Column("seq", sa.BigInteger))
    op.execute(
        "UPDATE plugin_api_keys k SET seq = o.n FROM "
        "(SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM plugin_api_keys) o WHERE k.id = o.id"
    )
    op.execute("ALTER TABLE plugin_api_keys ALTER COLUMN seq SET NOT NULL")
    op.execute("ALTER TABLE plugin_api_keys ALTER COLUMN seq ADD GENERATED BY DEFAULT AS IDENTITY")
    op.execute(
        "SELECT setval(pg_get_serial_sequence('plugin_api_keys', 'seq'), coalesce(max(seq), 0) + 1, false) "
        "FROM plugin_api_keys"
    )
    op.create_unique_constraint("uq_plugin_api_keys_seq", "plugin_api_keys", ["seq"])
    op.create_index("ix_plugin_api_keys_user_seq", "plugin_api_keys", ["user_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_plugin_api_keys_user_seq", "plugin_api_keys")
    op.drop_constraint("uq_plugin_api_keys_seq", "plugin_api_keys")
    op.drop_column("plugin_api_keys", "seq")
    op.drop_table("signin_failures")
    # Back to the old spellings (two passes, as in the upgrade); a collision loser gets its own original back.
    op.execute("UPDATE users SET email = 'migrating:' || id WHERE email_original IS NOT NULL")
    op.execute("UPDATE users SET email = email_original WHERE email_original IS NOT NULL")
    op.drop_column("users", "email_review")
    op.drop_column("users", "email_original")
