"""Business logic of the webhooks service: functions over a session that flush and never commit.

Registration and the delivery log serve the HTTP API; ``fan_out`` is the dispatcher's consumer effect, which turns
one render event into one durable delivery row per target in the consumer's transaction. Whatever creates or
re-queues deliveries notifies ``webhooks_deliveries`` so idle dispatchers wake at commit.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import structlog
from sqlalchemy import DateTime, and_, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.webhooks import signing
from services.webhooks.errors import (
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    RateLimitedError,
    WebhookExistsError,
)
from services.webhooks.models import (
    ALL_EVENTS,
    CALLBACK_TARGET,
    NOTIFY_CHANNEL,
    RENDER_EVENT_TYPES,
    TEST_EVENT,
    AttemptView,
    DeliveriesPage,
    DeliveryView,
    RegisteredWebhook,
    RegisterWebhookRequest,
    WebhookView,
    attempts,
    callback_secrets,
    deliveries,
    endpoints,
    manual_sends,
)
from shared.cursor import decode_cursor, encode_cursor
from shared.events.envelope import CloudEvent
from shared.models import new_id
from shared.netguard import UnsafeUrlError, check_address, check_url

log = structlog.stdlib.get_logger(__name__)

SUBSCRIBABLE = frozenset({*RENDER_EVENT_TYPES, ALL_EVENTS})
RESOLVE_TIMEOUT_SECONDS = 3.0
MANUAL_SEND_WINDOW_SECONDS = 60


async def wake_dispatchers(session: AsyncSession) -> None:
    """Sent at commit (PostgreSQL delivers NOTIFY with the transaction), never for a rolled-back change."""
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


# -- registration ------------------------------------------------------------------------------------------------


def _normalized_events(events: list[str]) -> list[str]:
    unknown = [e for e in events if e not in SUBSCRIBABLE]
    if unknown:
        allowed = ", ".join(sorted(SUBSCRIBABLE))
        raise InvalidInputError("events", f"unknown event {unknown[0]!r}; allowed: {allowed}")
    return [ALL_EVENTS] if ALL_EVENTS in events else sorted(set(events))


async def check_destination(url: str, *, allow_private: bool) -> None:
    """Refuse a URL the dispatcher must never call: statically, then on the addresses its host resolves to now.

    A host that does not resolve yet is accepted (DNS may lag a new deployment); every attempt resolves and checks
    again, so it can never be used to reach a refused address later either.
    """
    try:
        check_url(url, allow_private=allow_private)
    except UnsafeUrlError as exc:
        raise InvalidInputError("url", str(exc)) from None
    host = urlsplit(url).hostname or ""
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
        )
    except (OSError, TimeoutError, UnicodeError):
        return
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        try:
            check_address(address, allow_private=allow_private)
        except UnsafeUrlError as exc:  # the reason names the kind of network, never the address resolved
            log.info("webhook_url_refused", host=host, address=address, reason=str(exc))
            raise InvalidInputError("url", f"{host} resolves to a refused address: {exc}") from None


def _view(row: Any) -> WebhookView:
    return WebhookView(
        webhook_id=row.id,
        url=row.url,
        events=list(row.events),
        description=row.description,
        is_active=row.is_active,
        disabled_reason=row.disabled_reason,
        created_at=row.created_at,
        last_success_at=row.last_success_at,
        failure_count=row.failure_count,
    )


async def register(
    session: AsyncSession,
    user_id: str,
    request: RegisterWebhookRequest,
    *,
    allow_private: bool,
    max_endpoints: int,
) -> RegisteredWebhook:
    events = _normalized_events(request.events)
    url = request.url.strip()
    await check_destination(url, allow_private=allow_private)
    if request.secret is not None and (problem := signing.secret_problem(request.secret)):
        raise InvalidInputError("secret", problem)
    # Serialize one user's registrations, so the per-user limit and the unique URL hold under concurrency.
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('webhooks.user.' || :u))"), {"u": user_id})
    live = and_(endpoints.c.user_id == user_id, endpoints.c.deleted_at.is_(None))
    count = (await session.execute(select(func.count()).select_from(endpoints).where(live))).scalar_one()
    if count >= max_endpoints:
        raise InvalidStateError(f"At most {max_endpoints} webhooks per account; delete one first")
    if (await session.execute(select(endpoints.c.id).where(live, endpoints.c.url == url))).first():
        raise WebhookExistsError()
    secret = request.secret or signing.new_secret()
    row = (
        await session.execute(
            insert(endpoints)
            .values(
                id=new_id(),
                user_id=user_id,
                url=url,
                description=request.description,
                events=events,
                secret=secret,
            )
            .returning(endpoints)
        )
    ).one()
    log.info("webhook_registered", webhook_id=row.id)
    return RegisteredWebhook(
        webhook_id=row.id,
        url=row.url,
        secret=secret,
        events=events,
        description=row.description,
        created_at=row.created_at,
    )


async def _own_endpoint(session: AsyncSession, user_id: str, webhook_id: str, *, lock: bool = False) -> Any:
    stmt = select(endpoints).where(
        endpoints.c.id == webhook_id, endpoints.c.user_id == user_id, endpoints.c.deleted_at.is_(None)
    )
    row = (await session.execute(stmt.with_for_update() if lock else stmt)).first()
    if row is None:
        raise NotFoundError("Webhook not found")
    return row


async def list_webhooks(session: AsyncSession, user_id: str) -> list[WebhookView]:
    stmt = (
        select(endpoints)
        .where(endpoints.c.user_id == user_id, endpoints.c.deleted_at.is_(None))
        .order_by(endpoints.c.created_at, endpoints.c.id)
    )
    return [_view(row) for row in (await session.execute(stmt)).all()]


async def _lock_pending(session: AsyncSession, webhook_id: str) -> None:
    """Lock the endpoint's pending deliveries before the endpoint itself: the dispatcher's recorder locks in that
    order (delivery rows, then the endpoint's streak), so taking the endpoint first would deadlock with it."""
    await session.execute(
        select(deliveries.c.id)
        .where(deliveries.c.endpoint_id == webhook_id, deliveries.c.status == "pending")
        .order_by(deliveries.c.id)
        .with_for_update()
    )


async def delete(session: AsyncSession, user_id: str, webhook_id: str) -> None:
    """Soft delete (an attempt in flight can still log its outcome); its pending deliveries are canceled."""
    await _own_endpoint(session, user_id, webhook_id)
    await _lock_pending(session, webhook_id)
    await _own_endpoint(session, user_id, webhook_id, lock=True)
    await session.execute(update(endpoints).where(endpoints.c.id == webhook_id).values(deleted_at=func.now()))
    await session.execute(
        update(deliveries)
        .where(deliveries.c.endpoint_id == webhook_id, deliveries.c.status == "pending")
        .values(status="canceled", completed_at=func.now(), next_attempt_at=None)
    )
    log.info("webhook_deleted", webhook_id=webhook_id)


async def enable(session: AsyncSession, user_id: str, webhook_id: str) -> WebhookView:
    """Re-activate; the failure streak starts over and deliveries held while disabled become due now."""
    await _own_endpoint(session, user_id, webhook_id)
    await _lock_pending(session, webhook_id)
    await _own_endpoint(session, user_id, webhook_id, lock=True)
    row = (
        await session.execute(
            update(endpoints)
            .where(endpoints.c.id == webhook_id)
            .values(is_active=True, disabled_reason=None, disabled_at=None, failure_count=0, failing_since=None)
            .returning(endpoints)
        )
    ).one()
    await session.execute(
        update(deliveries)
        .where(deliveries.c.endpoint_id == webhook_id, deliveries.c.status == "pending")
        .values(next_attempt_at=func.least(deliveries.c.next_attempt_at, func.now()))
    )
    await wake_dispatchers(session)
    log.info("webhook_enabled", webhook_id=webhook_id)
    return _view(row)


async def _count_manual_send(session: AsyncSession, webhook_id: str, per_minute: int) -> None:
    """Record one ``test``/``resend`` of the endpoint, or raise 429 when ``per_minute`` were made in the last minute.

    Counted in the database, so every replica shares the limit; an advisory lock per endpoint serializes the
    count and the insert, and database time decides the window. A refused call is not counted.
    """
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('webhooks.manual.' || :e))"), {"e": webhook_id})
    window = func.clock_timestamp(type_=DateTime(timezone=True)) - timedelta(seconds=MANUAL_SEND_WINDOW_SECONDS)
    await session.execute(
        manual_sends.delete().where(manual_sends.c.endpoint_id == webhook_id, manual_sends.c.sent_at <= window)
    )
    count, retry_after = (
        await session.execute(
            select(
                func.count(),
                func.date_part("epoch", func.min(manual_sends.c.sent_at) - window),
            ).where(manual_sends.c.endpoint_id == webhook_id)
        )
    ).one()
    if count >= per_minute:
        log.info("webhook_manual_send_limited", webhook_id=webhook_id, limit=per_minute)
        raise RateLimitedError(
            f"At most {per_minute} test or resend calls per webhook per minute",
            retry_after=float(retry_after or MANUAL_SEND_WINDOW_SECONDS),
            details={"limit": per_minute},
        )
    await session.execute(insert(manual_sends).values(endpoint_id=webhook_id))


async def send_test(session: AsyncSession, user_id: str, webhook_id: str, *, per_minute: int) -> str:
    """Queue a ``webhook.test`` event to this endpoint (also while it is disabled: that is how one checks a fix)."""
    endpoint = await _own_endpoint(session, user_id, webhook_id)
    await _count_manual_send(session, webhook_id, per_minute)
    now = datetime.now(UTC)
    event_id = new_id()
    payload = signing.body(TEST_EVENT, now, {"webhookId": webhook_id, "message": "Test event from Renderiq"})
    delivery_id = new_id()
    await session.execute(
        insert(deliveries).values(
            id=delivery_id,
            event_id=event_id,
            event_type=TEST_EVENT,
            event_time=now,
            user_id=user_id,
            endpoint_id=webhook_id,
            target_key=webhook_id,
            url=endpoint.url,
            payload=payload,
        )
    )
    await wake_dispatchers(session)
    return delivery_id


# -- the delivery log ---------------------------------------------------------------------------------------------


async def list_deliveries(
    session: AsyncSession, user_id: str, webhook_id: str, limit: int, cursor: str | None
) -> DeliveriesPage:
    """Newest first; each delivery with its attempts, oldest attempt first."""
    await _own_endpoint(session, user_id, webhook_id)
    stmt = select(deliveries).where(deliveries.c.endpoint_id == webhook_id)
    if cursor is not None:
        stmt = stmt.where(deliveries.c.seq < decode_cursor(cursor))
    rows = (await session.execute(stmt.order_by(deliveries.c.seq.desc()).limit(limit + 1))).all()
    page, more = rows[:limit], len(rows) > limit
    by_delivery: dict[str, list[AttemptView]] = {row.id: [] for row in page}
    if page:
        attempt_rows = await session.execute(
            select(attempts).where(attempts.c.delivery_id.in_(list(by_delivery))).order_by(attempts.c.id)
        )
        for a in attempt_rows.all():
            by_delivery[a.delivery_id].append(
                AttemptView(
                    at=a.attempted_at,
                    status_code=a.status_code,
                    error=a.error,
                    duration_ms=a.duration_ms,
                    response_body=a.response_body,
                )
            )
    return DeliveriesPage(
        deliveries=[
            DeliveryView(
                delivery_id=row.id,
                event_id=row.event_id,
                event=row.event_type,
                status=row.status,
                attempts=by_delivery[row.id],
                next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
                created_at=row.created_at,
            )
            for row in page
        ],
        next_cursor=encode_cursor(page[-1].seq) if more else None,
    )


async def resend(session: AsyncSession, user_id: str, webhook_id: str, delivery_id: str, *, per_minute: int) -> str:
    """Queue the delivery again, now, with a fresh retry budget: same event id and body (its ``outputUrl`` signed
    afresh when sent), new signature."""
    endpoint = await _own_endpoint(session, user_id, webhook_id)
    if not endpoint.is_active:
        raise InvalidStateError("This webhook is disabled; enable it before resending")
    row = (
        await session.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id, deliveries.c.endpoint_id == webhook_id)
            .values(status="pending", retry_index=0, next_attempt_at=func.now(), completed_at=None)
            .returning(deliveries.c.id)
        )
    ).first()
    if row is None:
        raise NotFoundError("Delivery not found")
    await _count_manual_send(session, webhook_id, per_minute)  # a refusal rolls the re-queue back
    await wake_dispatchers(session)
    return delivery_id


async def callback_secret(session: AsyncSession, user_id: str) -> str:
    """The account's secret for ``callback_url`` deliveries, created on first use."""
    await session.execute(
        pg_insert(callback_secrets)
        .values(user_id=user_id, secret=signing.new_secret())
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    secret: str = (
        await session.execute(select(callback_secrets.c.secret).where(callback_secrets.c.user_id == user_id))
    ).scalar_one()
    return secret


# -- fan-out (the dispatcher's consumer effect) -------------------------------------------------------------------


async def fan_out(session: AsyncSession, event: CloudEvent, user_id: str, callback_url: str | None) -> int:
    """One delivery row per subscribed endpoint of the render's owner, plus one to its ``callback_url``.

    A disabled endpoint gets its row too, held (``next_attempt_at`` NULL) until ``enable`` makes it due: events that
    arrive meanwhile are not lost. Each row keeps the output's storage key, so every attempt signs a fresh URL.
    """
    targets = await _subscribed_endpoints(session, user_id, event.type)
    payload = signing.render_body(event.type, event.time, event.data)
    output_key = event.data.get("outputKey") or None

    def row(endpoint_id: str | None, target_key: str, url: str) -> dict[str, Any]:
        return {
            "id": new_id(),
            "event_id": event.id,
            "event_type": event.type,
            "event_time": event.time,
            "user_id": user_id,
            "endpoint_id": endpoint_id,
            "target_key": target_key,
            "url": url,
            "payload": payload,
            "output_key": output_key,
        }

    due = [row(t.id, t.id, t.url) for t in targets if t.is_active]
    held = [{**row(t.id, t.id, t.url), "next_attempt_at": None} for t in targets if not t.is_active]
    if callback_url:
        await callback_secret(session, user_id)
        due.append(row(None, CALLBACK_TARGET, callback_url))
    statement = pg_insert(deliveries).on_conflict_do_nothing(constraint="uq_deliveries_event_target")
    for values in (due, held):
        if values:  # two statements: an executemany needs the same columns in every row
            await session.execute(statement, values)
    if due:
        await wake_dispatchers(session)
    return len(due) + len(held)


async def _subscribed_endpoints(session: AsyncSession, user_id: str, event_type: str) -> list[Any]:
    """The owner's live endpoints subscribed to ``event_type``, active or not, locked ``FOR KEY SHARE``.

    The lock waits for an ``enable`` or ``delete`` in progress (both lock the endpoint ``FOR UPDATE``) and reads the
    row as it commits, so no row is held for an endpoint enabled meanwhile (it would wait for ever), nor created for
    one just deleted. It does not wait for the dispatchers' streak updates (``FOR NO KEY UPDATE``).
    """
    subscribed = or_(endpoints.c.events.contains([event_type]), endpoints.c.events.contains([ALL_EVENTS]))
    stmt = (
        select(endpoints.c.id, endpoints.c.url, endpoints.c.is_active)
        .where(endpoints.c.user_id == user_id, endpoints.c.deleted_at.is_(None), subscribed)
        .with_for_update(read=True, key_share=True)
    )
    return list((await session.execute(stmt)).all())
