"""Reliability: the outbox's broker record, job requeue marks, files and idempotency-key retention.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from services.renders.models import outbox_broker
from shared.migrations import create_tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_tables(op.get_bind(), outbox_broker)
    op.add_column("renders", sa.Column("requeued_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("renders", sa.Column("files_deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_renders_files_due",
        "renders",
        ["completed_at"],
        postgresql_where=sa.text("files_deleted_at IS NULL AND completed_at IS NOT NULL"),
    )
    op.create_index("ix_idempotency_keys_created", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created", table_name="idempotency_keys")
    op.drop_index("ix_renders_files_due", table_name="renders")
    op.drop_column("renders", "files_deleted_at")
    op.drop_column("renders", "requeued_at")
    outbox_broker.drop(op.get_bind(), checkfirst=True)
