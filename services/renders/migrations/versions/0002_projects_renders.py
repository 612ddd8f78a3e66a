"""Projects, renders (with metadata JSONB) and idempotency keys.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.migrations import timestamp

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False, index=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("slug", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("platform", sa.Text, nullable=False, server_default="unknown"),
        timestamp("created_at", False, True),
        sa.UniqueConstraint("user_id", "slug"),
    )
    op.create_table(
        "renders",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("project_id", sa.Text, sa.ForeignKey("projects.id", ondelete="SET NULL"), index=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("progress", sa.Integer, nullable=False, server_default="0"),
        sa.Column("quality", sa.Text, nullable=False),
        sa.Column("aspect_ratio", sa.Text, nullable=False),
        sa.Column("style", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text),
        sa.Column("platform", sa.Text, nullable=False),
        sa.Column("plugin_version", sa.Text),
        sa.Column("credits_cost", sa.Integer, nullable=False),
        sa.Column("credits_used", sa.Integer, nullable=False, server_default="0"),
        sa.Column("input_key", sa.Text, nullable=False),
        sa.Column("input_type", sa.Text, nullable=False),
        sa.Column("output_key", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("error_code", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("claim_token", sa.Text),
        sa.Column("processing_time", sa.Float),
        sa.Column("metadata", JSONB, nullable=False, server_default="{}"),
        timestamp("created_at", False, True),
        timestamp("started_at"),
        timestamp("heartbeat_at"),
        timestamp("completed_at"),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed', 'canceled')", name="ck_renders_status"
        ),
        sa.CheckConstraint("progress BETWEEN 0 AND 100", name="ck_renders_progress"),
    )
    op.create_index("ix_renders_user_created", "renders", ["user_id", "created_at", "id"])
    op.create_index(
        "ix_renders_processing_heartbeat",
        "renders",
        ["heartbeat_at"],
        postgresql_where=sa.text("status = 'processing'"),
    )
    op.create_index(
        "ix_renders_completed_quality",
        "renders",
        ["quality", "completed_at"],
        postgresql_where=sa.text("status = 'completed'"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("render_id", sa.Text, nullable=False),
        timestamp("created_at", False, True),
    )


def downgrade() -> None:
    for table in ("idempotency_keys", "renders", "projects"):
        op.drop_table(table)
