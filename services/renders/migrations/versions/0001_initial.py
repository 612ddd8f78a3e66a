"""Initial renders schema: outbox, processed_events.

Revision ID: 0001
Revises:
"""

from alembic import op

from services.renders.models import SCHEMA, outbox, processed_events
from shared.migrations import create_tables
from shared.outbox import notify_trigger_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_tables(op.get_bind(), outbox, processed_events)
    for statement in notify_trigger_sql(SCHEMA):
        op.execute(statement)


def downgrade() -> None:
    for table in (
        outbox,
        processed_events,
    ):
        table.drop(op.get_bind(), checkfirst=True)
