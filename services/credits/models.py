"""Tables of the ``credits`` schema and the camelCase schemas of its HTTP API.

``accounts.balance`` is the spendable balance (reservations already taken out). ``ledger`` is append-only: every
change of a balance is one row, and ``UNIQUE (kind, reference)`` makes each operation idempotent by its reference
(the render id for reserve/capture/release, the caller's idempotency key for a grant).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StrictInt, StringConstraints
from pydantic import Field as PydanticField
from pydantic.alias_generators import to_camel
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    func,
)
from sqlmodel import Field

from shared.consumer import processed_events_table
from shared.models import SQLModel, registry_for_schema

SCHEMA = "credits"
schema_registry = registry_for_schema()
metadata = schema_registry.metadata

LedgerKind = Literal["grant", "reserve", "capture", "release"]
LEDGER_KINDS: tuple[LedgerKind, ...] = ("grant", "reserve", "capture", "release")
MAX_CREDITS = 1_000_000
"""Upper bound of one operation: large enough for any real grant or render, small enough to catch mistakes."""


class CreditsModel(SQLModel, registry=schema_registry):
    """Base of the credits schema's SQLModel tables."""


def _timestamp() -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Account(CreditsModel, table=True):
    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint("balance >= 0", name="ck_accounts_balance_non_negative"),)

    user_id: str = Field(sa_column=Column(Text, primary_key=True))
    balance: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    created_at: datetime | None = Field(default=None, sa_column=_timestamp())
    updated_at: datetime | None = Field(default=None, sa_column=_timestamp())


AMOUNT_MATCHES_KIND = (
    "(kind = 'grant' AND amount = credits) OR (kind = 'reserve' AND amount = -credits)"
    " OR (kind = 'capture' AND amount = 0) OR (kind = 'release' AND amount = credits)"
)
"""The signed effect on the balance follows from the kind: a row cannot say one thing and do another."""


class LedgerEntry(CreditsModel, table=True):
    __tablename__ = "ledger"
    __table_args__ = (
        CheckConstraint("kind IN ('grant', 'reserve', 'capture', 'release')", name="ck_ledger_kind"),
        CheckConstraint("credits > 0", name="ck_ledger_credits_positive"),
        CheckConstraint(AMOUNT_MATCHES_KIND, name="ck_ledger_amount_matches_kind"),
        UniqueConstraint("kind", "reference", name="uq_ledger_kind_reference"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    user_id: str = Field(sa_column=Column(Text, ForeignKey("accounts.user_id"), nullable=False))
    kind: str = Field(sa_column=Column(Text, nullable=False))
    amount: int = Field(sa_column=Column(Integer, nullable=False))
    credits: int = Field(sa_column=Column(Integer, nullable=False))
    reference: str = Field(sa_column=Column(Text, nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime | None = Field(default=None, sa_column=_timestamp())


ledger = metadata.tables["ledger"]
accounts = metadata.tables["accounts"]
Index("ix_ledger_user_id_id", ledger.c.user_id, ledger.c.id.desc())
processed_events = processed_events_table(metadata)


# --- HTTP schemas (camelCase on the wire) -------------------------------------------------------------------------

Reference = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
PositiveCredits = Annotated[StrictInt, PydanticField(gt=0, le=MAX_CREDITS)]


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class GrantRequest(CamelModel):
    credits: PositiveCredits
    reference: Reference
    reason: Reason


class ReservationRequest(CamelModel):
    render_id: Reference
    credits: PositiveCredits


class Credits(CamelModel):
    """The contract's ``Credits``: a release is neither earned nor spent."""

    balance: int = 0
    total_earned: int = 0
    total_spent: int = 0
    monthly_earned: int = 0
    monthly_spent: int = 0


class Reservation(CamelModel):
    render_id: str
    credits: int
    balance: int


class Transaction(CamelModel):
    id: str
    kind: LedgerKind
    credits: int
    amount: int
    reference: str
    reason: str | None
    created_at: datetime


class TransactionsPage(CamelModel):
    transactions: list[Transaction]
    next_cursor: str | None
