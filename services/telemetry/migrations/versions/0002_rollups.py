"""Events seen (dedupe and raw retention) and the per-minute rollups.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _minute() -> sa.Column:
    return sa.Column("minute", sa.DateTime(timezone=True), primary_key=True)


def _key(name: str) -> sa.Column:
    return sa.Column(name, sa.Text(), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "events_seen",
        sa.Column("event_id", sa.Text(), primary_key=True),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", JSONB(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_events_seen_received", "events_seen", ["received_at"])
    op.create_table(
        "render_minutes",
        _minute(),
        _key("platform"),
        _key("plugin_version"),
        _key("status"),
        sa.Column("renders", sa.Integer(), nullable=False),
        sa.Column("credits", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "request_minutes",
        _minute(),
        _key("platform"),
        _key("plugin_version"),
        _key("method"),
        _key("route"),
        sa.Column("status", sa.Integer(), primary_key=True),
        _key("error_code"),
        sa.Column("requests", sa.Integer(), nullable=False),
    )
    op.create_table(
        "latency_minutes",
        _minute(),
        _key("metric"),
        _key("dim1"),
        _key("dim2"),
        sa.Column("bucket", sa.Integer(), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.create_table("webhook_minutes", _minute(), _key("outcome"), sa.Column("count", sa.Integer(), nullable=False))
    op.create_table("active_users", _minute(), _key("platform"), _key("plugin_version"), _key("user_id"))


def downgrade() -> None:
    for table in ("active_users", "webhook_minutes", "latency_minutes", "request_minutes", "render_minutes"):
        op.drop_table(table)
    op.drop_table("events_seen")
