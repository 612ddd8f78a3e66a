"""Accounts (spendable balance) and the append-only ledger.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("user_id", sa.Text(), primary_key=True),
        sa.Column("balance", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("balance >= 0", name="ck_accounts_balance_non_negative"),
    )
    op.create_table(
        "ledger",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Text(), sa.ForeignKey("accounts.user_id"), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("credits", sa.Integer(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('grant', 'reserve', 'capture', 'release')", name="ck_ledger_kind"),
        sa.CheckConstraint("credits > 0", name="ck_ledger_credits_positive"),
        sa.CheckConstraint(
            "(kind = 'grant' AND amount = credits) OR (kind = 'reserve' AND amount = -credits)"
            " OR (kind = 'capture' AND amount = 0) OR (kind = 'release' AND amount = credits)",
            name="ck_ledger_amount_matches_kind",
        ),
        sa.UniqueConstraint("kind", "reference", name="uq_ledger_kind_reference"),
    )
    op.create_index("ix_ledger_user_id_id", "ledger", ["user_id", sa.text("id DESC")])


def downgrade() -> None:
    op.drop_index("ix_ledger_user_id_id", table_name="ledger")
    op.drop_table("ledger")
    op.drop_table("accounts")
