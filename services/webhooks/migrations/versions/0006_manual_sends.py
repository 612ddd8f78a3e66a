"""Per-endpoint record of manual sends (``test``, ``resend``) for their rate limit; delivery-log errors that named
the address a host resolved to lose it.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

from services.webhooks.models import manual_sends
from shared.migrations import create_tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCRUB = r"""
UPDATE webhooks.attempts
SET error = regexp_replace(error, ' resolves to \S+: ', ' resolves to a refused address: ')
WHERE error LIKE 'refused: % resolves to %'
"""
"""Attempts logged before the fix read ``refused: <host> resolves to <address>: <reason>``."""
SCRUB_CONNECT = r"""
UPDATE webhooks.attempts
SET error = regexp_replace(error, '\(''[^'']*'', ', '(''<address>'', ', 'g')
WHERE error LIKE '%Connect call failed (%'
"""
"""asyncio's ``Connect call failed ('<address>', <port>)`` that network errors were logged with."""


def upgrade() -> None:
    create_tables(op.get_bind(), manual_sends)
    op.execute(SCRUB)
    op.execute(SCRUB_CONNECT)


def downgrade() -> None:
    manual_sends.drop(op.get_bind(), checkfirst=True)
