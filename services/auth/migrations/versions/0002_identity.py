"""Identity tables: users, refresh_tokens, plugin_api_keys.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

from shared.migrations import timestamp

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("email", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("is_operator", sa.Boolean, nullable=False, server_default=sa.false()),
        timestamp("created_at", False, True),
        timestamp("deleted_at"),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False, index=True),
        sa.Column("family_id", sa.Text, nullable=False, index=True),
        sa.Column("parent_id", sa.Text),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        timestamp("created_at", False, True),
        timestamp("expires_at", False),
        timestamp("used_at"),
        timestamp("revoked_at"),
    )
    op.create_table(
        "plugin_api_keys",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False, index=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("key_hash", sa.Text, nullable=False, unique=True),
        sa.Column("key_prefix", sa.Text, nullable=False),
        sa.Column("scopes", ARRAY(sa.Text), nullable=False),
        timestamp("expires_at"),
        timestamp("last_used_at"),
        timestamp("revoked_at"),
        timestamp("created_at", False, True),
    )


def downgrade() -> None:
    for table in ("plugin_api_keys", "refresh_tokens", "users"):
        op.drop_table(table)
