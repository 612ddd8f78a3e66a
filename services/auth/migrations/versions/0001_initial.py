"""Initial auth schema: outbox.

Revision ID: 0001
Revises:
"""

from alembic import op

from services.auth.models import SCHEMA, outbox
from shared.migrations import create_tables
from shared.outbox import notify_trigger_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_tables(op.get_bind(), outbox)
    for statement in notify_trigger_sql(SCHEMA):
        op.execute(statement)


def downgrade() -> None:
    for table in (outbox,):
        table.drop(op.get_bind(), checkfirst=True)
