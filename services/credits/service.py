"""Business logic of the credits service: functions over a session that flush and never commit.

Every operation that changes a balance first locks the account row (``SELECT ... FOR UPDATE``), so concurrent
operations on one account run one after another and always take locks in the same order (account, then ledger):
no double spend, no deadlock. Idempotency is by reference: ``UNIQUE (kind, reference)`` is the backstop, the
check under the account lock is what answers a repeated call with the first call's result.
"""

from __future__ import annotations

from typing import Literal

import structlog
from sqlalchemy import ColumnElement, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.credits.errors import IdempotencyConflictError, InsufficientCreditsError
from services.credits.models import (
    Credits,
    LedgerEntry,
    LedgerKind,
    Reservation,
    Transaction,
    TransactionsPage,
    accounts,
    ledger,
)
from shared.cursor import decode_cursor, encode_cursor

log = structlog.stdlib.get_logger(__name__)

Settlement = Literal["capture", "release"]
RESERVE_REASON = "Render reserved"
CAPTURE_REASON = "Render completed"


async def _lock_balance(session: AsyncSession, user_id: str) -> int | None:
    """The account's balance, its row locked until the transaction ends; None when there is no account."""
    stmt = select(accounts.c.balance).where(accounts.c.user_id == user_id).with_for_update()
    balance = (await session.execute(stmt)).scalar_one_or_none()
    return None if balance is None else int(balance)


async def _add_to_balance(session: AsyncSession, user_id: str, delta: int) -> int:
    stmt = (
        update(accounts)
        .where(accounts.c.user_id == user_id)
        .values(balance=accounts.c.balance + delta, updated_at=func.now())
        .returning(accounts.c.balance)
    )
    return int((await session.execute(stmt)).scalar_one())


async def _entry(session: AsyncSession, kinds: tuple[LedgerKind, ...], reference: str) -> LedgerEntry | None:
    stmt = select(LedgerEntry).where(ledger.c.kind.in_(kinds), ledger.c.reference == reference).limit(1)
    return (await session.execute(stmt)).scalar_one_or_none()


async def _append(
    session: AsyncSession, user_id: str, kind: LedgerKind, credits: int, reference: str, reason: str | None
) -> None:
    amount = {"grant": credits, "reserve": -credits, "capture": 0, "release": credits}[kind]
    values = {
        "user_id": user_id,
        "kind": kind,
        "amount": amount,
        "credits": credits,
        "reference": reference,
        "reason": reason,
    }
    await session.execute(insert(ledger).values(**values))


async def grant(session: AsyncSession, user_id: str, credits: int, reference: str, reason: str) -> Credits:
    """Add ``credits`` once per ``reference`` (creating the account if needed); the user's figures after it."""
    await session.execute(pg_insert(accounts).values(user_id=user_id).on_conflict_do_nothing())
    await _lock_balance(session, user_id)  # a concurrent grant with this reference waits here, then sees ours
    existing = await _entry(session, ("grant",), reference)
    if existing is not None:
        if existing.user_id != user_id or existing.credits != credits:
            raise IdempotencyConflictError("grant", reference)
        log.info("grant_duplicate", user_id=user_id, reference=reference)
    else:
        await _add_to_balance(session, user_id, credits)
        await _append(session, user_id, "grant", credits, reference, reason)
        log.info("credits_granted", user_id=user_id, credits=credits, reference=reference)
    await session.flush()
    return await summary(session, user_id)


async def reserve(session: AsyncSession, user_id: str, render_id: str, credits: int) -> Reservation:
    """Take ``credits`` out of the spendable balance for ``render_id``, once; 402 when the balance is short."""
    balance = await _lock_balance(session, user_id)
    existing = await _entry(session, ("reserve",), render_id)
    if existing is not None:
        if existing.user_id != user_id or existing.credits != credits:
            raise IdempotencyConflictError("reserve", render_id)
        return Reservation(render_id=render_id, credits=credits, balance=balance or 0)
    if balance is None or balance < credits:
        raise InsufficientCreditsError(required=credits, available=balance or 0)
    new_balance = await _add_to_balance(session, user_id, -credits)
    try:
        await _append(session, user_id, "reserve", credits, render_id, RESERVE_REASON)
    except IntegrityError as exc:  # the same render id reserved concurrently by another user
        raise IdempotencyConflictError("reserve", render_id) from exc
    await session.flush()
    log.info("credits_reserved", user_id=user_id, render_id=render_id, credits=credits, balance=new_balance)
    return Reservation(render_id=render_id, credits=credits, balance=new_balance)


async def _settle(session: AsyncSession, render_id: str, kind: Settlement, reason: str) -> bool:
    """Capture or release a render's reservation exactly once; True when this call changed the ledger."""
    reservation = await _entry(session, ("reserve",), render_id)
    if reservation is None:
        log.info("settlement_without_reservation", render_id=render_id, kind=kind)
        return False
    await _lock_balance(session, reservation.user_id)
    settled = await _entry(session, ("capture", "release"), render_id)
    if settled is not None:
        if settled.kind == kind:
            log.info("settlement_duplicate", render_id=render_id, kind=kind)
        else:
            log.warning("settlement_conflict_ignored", render_id=render_id, kind=kind, settled_as=settled.kind)
        return False
    if kind == "release":
        await _add_to_balance(session, reservation.user_id, reservation.credits)
    await _append(session, reservation.user_id, kind, reservation.credits, render_id, reason)
    await session.flush()
    log.info("reservation_settled", render_id=render_id, kind=kind, credits=reservation.credits)
    return True


async def capture(session: AsyncSession, render_id: str, reason: str = CAPTURE_REASON) -> bool:
    """The reserved credits are spent (the balance already excludes them)."""
    return await _settle(session, render_id, "capture", reason)


async def release(session: AsyncSession, render_id: str, reason: str) -> bool:
    """The reserved credits go back to the spendable balance."""
    return await _settle(session, render_id, "release", reason)


async def summary(session: AsyncSession, user_id: str) -> Credits:
    """Balance and earned/spent totals (all time and this calendar month, UTC); zeros for an unknown user."""
    month_start = func.date_trunc("month", func.now(), "UTC")
    this_month = ledger.c.created_at >= month_start

    def total(kind: LedgerKind, *extra: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(ledger.c.credits).filter(ledger.c.kind == kind, *extra), 0)

    stmt = select(
        select(accounts.c.balance).where(accounts.c.user_id == user_id).scalar_subquery(),
        total("grant"),
        total("capture"),
        total("grant", this_month),
        total("capture", this_month),
    ).where(ledger.c.user_id == user_id)
    balance, earned, spent, monthly_earned, monthly_spent = (await session.execute(stmt)).one()
    return Credits(
        balance=int(balance or 0),
        total_earned=int(earned),
        total_spent=int(spent),
        monthly_earned=int(monthly_earned),
        monthly_spent=int(monthly_spent),
    )


async def transactions(session: AsyncSession, user_id: str, limit: int, cursor: str | None) -> TransactionsPage:
    """One page of the user's ledger, newest first; ``nextCursor`` is null on the last page."""
    stmt = select(LedgerEntry).where(ledger.c.user_id == user_id).order_by(ledger.c.id.desc()).limit(limit + 1)
    if cursor is not None:
        stmt = stmt.where(ledger.c.id < decode_cursor(cursor))
    rows = list((await session.execute(stmt)).scalars())
    page = rows[:limit]
    next_cursor = encode_cursor(int(page[-1].id or 0)) if len(rows) > limit else None
    return TransactionsPage(
        transactions=[
            Transaction(
                id=str(row.id),
                kind=row.kind,
                credits=row.credits,
                amount=row.amount,
                reference=row.reference,
                reason=row.reason,
                created_at=row.created_at,
            )
            for row in page
        ],
        next_cursor=next_cursor,
    )
