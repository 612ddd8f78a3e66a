"""Endpoints, per-account callback secrets, the durable delivery schedule and the attempt log.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from shared.migrations import timestamp

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plugin_webhooks",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("events", sa.ARRAY(sa.Text()), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        timestamp("disabled_at"),
        sa.Column("failure_count", sa.Integer(), nullable=False, server_default="0"),
        timestamp("failing_since"),
        timestamp("last_success_at"),
        timestamp("created_at", nullable=False, default_now=True),
        timestamp("deleted_at"),
    )
    op.create_index(
        "ix_plugin_webhooks_user", "plugin_webhooks", ["user_id"], postgresql_where=sa.text("deleted_at IS NULL")
    )
    op.create_index(
        "uq_plugin_webhooks_user_url",
        "plugin_webhooks",
        ["user_id", "url"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "callback_secrets",
        sa.Column("user_id", sa.Text(), primary_key=True),
        sa.Column("secret", sa.Text(), nullable=False),
        timestamp("created_at", nullable=False, default_now=True),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False, unique=True),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("endpoint_id", sa.Text(), sa.ForeignKey("plugin_webhooks.id"), nullable=True),
        sa.Column("target_key", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("attempt_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("retry_index", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True, server_default=sa.func.now()),
        timestamp("locked_until"),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        timestamp("created_at", nullable=False, default_now=True),
        timestamp("completed_at"),
        sa.UniqueConstraint("event_id", "target_key", name="uq_deliveries_event_target"),
        sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed', 'canceled')", name="ck_deliveries_status"),
    )
    op.create_index(
        "ix_deliveries_due", "deliveries", ["next_attempt_at"], postgresql_where=sa.text("status = 'pending'")
    )
    op.create_index("ix_deliveries_endpoint", "deliveries", ["endpoint_id", "seq"])
    op.create_table(
        "attempts",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.Text(), sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
        timestamp("attempted_at", nullable=False, default_now=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=True),
    )
    op.create_index("ix_attempts_delivery", "attempts", ["delivery_id", "id"])


def downgrade() -> None:
    for table in ("attempts", "deliveries", "callback_secrets", "plugin_webhooks"):
        op.drop_table(table)
