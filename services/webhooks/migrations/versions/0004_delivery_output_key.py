"""Deliveries: ``output_key``, the storage key of a render's output, so each attempt signs a fresh ``outputUrl``.

The body stored at fan-out carries the URL minted when the render completed (valid 24 h by default), but retries span
more than a day and a resend may come days later; with the key, the dispatcher signs the URL when it sends.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("output_key", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("deliveries", "output_key")
