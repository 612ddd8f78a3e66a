"""Deliveries: FIFO due index (``next_attempt_at, seq``) and storage parameters for a hot, churning table.

The claim orders by ``next_attempt_at, seq``; the old index lacked the tie-break. Leases and outcomes update every
row two or three times within seconds: room on each page (fillfactor) keeps lease updates in place, and a lower
autovacuum threshold clears the dead index entries a burst leaves behind before claims have to skip them.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.create_index(
        "ix_deliveries_due", "deliveries", ["next_attempt_at", "seq"], postgresql_where=sa.text("status = 'pending'")
    )
    op.execute(
        "ALTER TABLE deliveries SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02, "
        "autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02)"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE deliveries RESET (fillfactor, autovacuum_vacuum_scale_factor, "
        "autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor)"
    )
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.create_index(
        "ix_deliveries_due", "deliveries", ["next_attempt_at"], postgresql_where=sa.text("status = 'pending'")
    )
