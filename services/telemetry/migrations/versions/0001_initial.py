"""Initial telemetry schema: processed_events.

Revision ID: 0001
Revises:
"""

from alembic import op

from services.telemetry.models import processed_events
from shared.migrations import create_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_tables(op.get_bind(), processed_events)


def downgrade() -> None:
    for table in (processed_events,):
        table.drop(op.get_bind(), checkfirst=True)
