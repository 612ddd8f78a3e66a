"""The outbox's record of the broker it publishes to (a new cluster id means the broker lost its data).

Revision ID: 0005
Revises: 0004
"""

from alembic import op

from services.webhooks.models import outbox_broker
from shared.migrations import create_tables

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_tables(op.get_bind(), outbox_broker)


def downgrade() -> None:
    outbox_broker.drop(op.get_bind(), checkfirst=True)
