"""The outbox's record of the broker it publishes to (a new cluster id means the broker lost its data).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from services.auth.models import outbox_broker
from shared.migrations import create_tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_tables(op.get_bind(), outbox_broker)


def downgrade() -> None:
    outbox_broker.drop(op.get_bind(), checkfirst=True)
