"""The delivery engine: claims due deliveries, attempts them concurrently, records outcomes in batches.

Work comes only from the ``deliveries`` table, never from Kafka offsets, so a crash loses nothing: a claimed row
carries a lease (``locked_until``); if its process dies mid-attempt, the lease runs out and any dispatcher takes it
again. Claims use ``FOR UPDATE SKIP LOCKED`` so several processes share the table without taking the same row, and
an unexpired lease keeps a row out of every other claim, so one attempt is never sent twice by two healthy processes.

Three parts, each in its own task: the claimer keeps up to ``max_in_flight`` attempts running (at most
``endpoint_concurrency`` per endpoint, so a slow endpoint never takes the slots of the others); each attempt is a
task of its own, bounded by the transport's timeout; the recorder writes finished attempts in one transaction per
batch (attempt log, delivery state, endpoint streak, disable decisions, outbox events for telemetry).

A render delivery with an output key gets its ``data.outputUrl`` signed when it is sent, valid
``output_url_ttl_seconds`` from then: the body stored at fan-out is otherwise sent as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter as Tally
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import structlog
from prometheus_client import Counter, Histogram

from services.webhooks import signing
from services.webhooks.config import Settings
from services.webhooks.models import CALLBACK_TARGET, NOTIFY_CHANNEL
from services.webhooks.policy import (
    GONE_REASON,
    Outcome,
    disable_reason,
    next_delay,
    should_disable,
)
from services.webhooks.transport import Transport
from shared.db import plain_dsn
from shared.events.envelope import CloudEvent
from shared.events.topics import WEBHOOK_EVENTS
from shared.outbox import outbox_values
from shared.retry import until_done
from shared.storage import Storage, storage_from_settings

log = structlog.stdlib.get_logger(__name__)

SOURCE = "/services/webhooks"

ATTEMPTS = Counter("plugin_webhook_attempts_total", "Webhook delivery attempts", ["outcome"])
ATTEMPT_SECONDS = Histogram(
    "plugin_webhook_attempt_seconds",
    "One attempt: request sent → answer (or failure)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
DELIVERY_LATENCY = Histogram(
    "plugin_webhook_delivery_latency_seconds",
    "Event time → delivered (successful attempts)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)

CLAIM_SQL = """
WITH candidates AS (
    SELECT id, target_key, next_attempt_at, seq
    FROM deliveries
    WHERE status = 'pending'
      AND next_attempt_at <= now()
      AND (locked_until IS NULL OR locked_until < now())
      AND NOT (target_key = ANY($2::text[]))
    ORDER BY next_attempt_at, seq
    LIMIT $3
),
ranked AS (
    SELECT c.id, c.next_attempt_at, c.seq,
           row_number() OVER (PARTITION BY c.target_key ORDER BY c.next_attempt_at, c.seq) AS place,
           coalesce(f.free, $5) AS free
    FROM candidates c LEFT JOIN unnest($6::text[], $7::int[]) AS f(key, free) ON f.key = c.target_key
),
picked AS (
    SELECT d.id, d.endpoint_id, d.user_id
    FROM deliveries d JOIN ranked r ON r.id = d.id
    WHERE r.place <= r.free
      AND d.status = 'pending' AND (d.locked_until IS NULL OR d.locked_until < now())
    ORDER BY r.next_attempt_at, r.seq
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
),
signed AS (
    SELECT p.id, coalesce(e.secret, c.secret) AS secret
    FROM picked p
    LEFT JOIN plugin_webhooks e ON e.id = p.endpoint_id
    LEFT JOIN callback_secrets c ON p.endpoint_id IS NULL AND c.user_id = p.user_id
)
UPDATE deliveries d SET locked_until = now() + make_interval(secs => $4)
FROM signed WHERE d.id = signed.id
RETURNING d.id, d.event_id, d.event_type, d.event_time, d.user_id, d.endpoint_id, d.target_key, d.url, d.payload,
          d.output_key, d.attempt_count, d.retry_index, signed.secret
"""
"""Due deliveries, oldest first, at most ``free`` per endpoint (its cap minus what this process has in flight).

Only ``deliveries`` is scanned (its partial index on ``next_attempt_at, seq``); a disabled endpoint's rows are not
due (``next_attempt_at`` is NULL while it is disabled), so no join is needed to skip them. ``candidates`` looks a few
batches ahead so one endpoint's backlog at the head of the queue does not hide the others'.
"""

RELEASE_SQL = "UPDATE deliveries SET locked_until = NULL WHERE id = ANY($1::text[]) AND status = 'pending'"

INSERT_ATTEMPTS_SQL = """
INSERT INTO attempts (delivery_id, attempted_at, status_code, error, duration_ms, response_body)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::text[], $5::int[], $6::text[])
"""

UPDATE_DELIVERIES_SQL = """
UPDATE deliveries d SET
    status = u.status,
    attempt_count = d.attempt_count + 1,
    retry_index = u.retry_index,
    next_attempt_at = CASE
        WHEN u.status = 'pending' AND d.event_type <> 'webhook.test' AND EXISTS (
            SELECT 1 FROM plugin_webhooks e WHERE e.id = d.endpoint_id AND NOT e.is_active
        ) THEN NULL  -- its endpoint was disabled meanwhile: held until enabled
        ELSE u.next_at END,
    locked_until = NULL,
    last_status_code = u.code,
    completed_at = CASE WHEN u.status = 'pending' THEN NULL ELSE now() END
FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::int[])
    AS u(id, status, retry_index, next_at, code)
WHERE d.id = u.id AND d.status = 'pending'
"""

UPDATE_STREAKS_SQL = """
UPDATE plugin_webhooks e SET
    failure_count = CASE WHEN u.reset THEN u.fails ELSE e.failure_count + u.fails END,
    failing_since = CASE
        WHEN u.fails = 0 THEN NULL
        WHEN u.reset THEN u.first_fail
        ELSE coalesce(e.failing_since, u.first_fail) END,
    last_success_at = coalesce(u.last_success, e.last_success_at)
FROM unnest($1::text[], $2::bool[], $3::int[], $4::timestamptz[], $5::timestamptz[])
    AS u(id, reset, fails, first_fail, last_success)
WHERE e.id = u.id
  -- A healthy endpoint's row is rewritten at most once a second: every batch of successes would otherwise update
  -- (and lock) the same row, and the recorders of several dispatchers would queue on it.
  AND NOT (u.fails = 0 AND e.failure_count = 0 AND e.last_success_at > u.last_success - interval '1 second')
RETURNING e.id, e.user_id, e.is_active, e.deleted_at, e.failure_count, e.failing_since
"""

DISABLE_SQL = """
UPDATE plugin_webhooks SET is_active = false, disabled_reason = $2, disabled_at = now()
WHERE id = $1 AND is_active AND deleted_at IS NULL
RETURNING id, user_id
"""

HOLD_SQL = """
UPDATE deliveries SET next_attempt_at = NULL
WHERE endpoint_id = $1 AND status = 'pending' AND event_type <> 'webhook.test'
"""
"""A disabled endpoint's deliveries wait, not due, until ``enable`` makes them due again (test pings still go)."""

EXPIRE_HELD_SQL = """
UPDATE deliveries SET status = 'canceled', completed_at = now()
WHERE status = 'pending' AND next_attempt_at IS NULL AND created_at < now() - make_interval(secs => $1)
"""
"""A delivery held for a disabled endpoint longer than ``held_retention_days`` is canceled (and deleted later)."""

CLEANUP_SQL = (
    "DELETE FROM deliveries WHERE status <> 'pending' AND completed_at < now() - make_interval(secs => $1)",
    "DELETE FROM processed_events WHERE processed_at < now() - make_interval(secs => $1)",
)
CLEANUP_INTERVAL_SECONDS = 600
CLAIM_COALESCE_SECONDS = 0.002
CANDIDATE_LOOKAHEAD = 4

INSERT_OUTBOX_SQL = """
INSERT INTO outbox (event_id, topic, key, headers, payload)
SELECT u.event_id, u.topic, u.key, u.headers::jsonb, u.payload
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[]) AS u(event_id, topic, key, headers, payload)
"""


@dataclass(frozen=True)
class Claimed:
    """A delivery this process holds the lease of, with everything needed to attempt it."""

    id: str
    event_id: str
    event_type: str
    event_time: datetime
    user_id: str
    endpoint_id: str | None
    target_key: str
    url: str
    payload: bytes
    output_key: str | None
    attempt_count: int
    retry_index: int
    secret: str | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Claimed:
        values: dict[str, Any] = dict(row)
        values["payload"] = bytes(values["payload"])
        return cls(**values)

    @property
    def cap_key(self) -> str:
        """Concurrency is capped per endpoint; callbacks per host:port (each render has its own URL)."""
        if self.target_key != CALLBACK_TARGET:
            return self.target_key
        return "callback:" + self.url.split("/", 3)[2] if self.url.count("/") >= 2 else self.url


@dataclass(frozen=True)
class Finished:
    delivery: Claimed
    outcome: Outcome
    at: datetime


class Dispatcher:
    """One process's share of the delivery work; ``start`` and ``stop`` from the dispatcher's lifespan."""

    def __init__(self, settings: Settings, transport: Transport | None = None, storage: Storage | None = None) -> None:
        self.settings = settings
        self.storage = storage or storage_from_settings(settings)  # only signs URLs: no I/O, no volume
        self.schedule = settings.retry_delays
        self.transport = transport or Transport(
            timeout_seconds=settings.timeout_seconds,
            allow_private=settings.allow_private_networks,
            response_body_bytes=settings.response_body_bytes,
            max_connections=settings.max_in_flight,
        )
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._results: asyncio.Queue[Finished] = asyncio.Queue()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._per_target: Tally[str] = Tally()
        self._claimer: asyncio.Task[None] | None = None
        self._recorder: asyncio.Task[None] | None = None
        self._cleaner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.transport.start()
        self._claimer = asyncio.create_task(self._claim_loop(), name="webhook-claimer")
        self._recorder = asyncio.create_task(self._record_loop(), name="webhook-recorder")
        self._cleaner = asyncio.create_task(self._cleanup_loop(), name="webhook-retention")

    async def stop(self) -> None:
        """Stop claiming, let attempts in flight finish (bounded by their timeout), record them, close."""
        for task in (self._claimer, self._cleaner):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._in_flight:
            # Bounded by the shutdown grace: an attempt still running after it keeps its lease (no second send
            # while it may still land) and is retried by another dispatcher once the lease ends.
            grace = min(self.settings.timeout_seconds + 1, self.settings.shutdown_grace_seconds)
            await asyncio.wait(list(self._in_flight.values()), timeout=grace)
        if self._recorder is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._results.join(), 10)
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recorder
        await self.transport.close()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        if self._pool is not None:
            await self._pool.close()

    async def _connect(self) -> asyncpg.Pool:
        dsn = plain_dsn(self.settings.database_url)
        if self._pool is None:
            settings = {"search_path": "webhooks,public", "application_name": "webhooks-dispatcher"}
            self._pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4, server_settings=settings)
        if self._listener is None or self._listener.is_closed():
            self._listener = await asyncpg.connect(dsn)
            await self._listener.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
        return self._pool

    # -- claiming ------------------------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        backoff = 0.2
        while True:
            try:
                pool = await self._connect()
                self._wake.clear()
                free = self.settings.max_in_flight - len(self._in_flight)
                if free <= 0:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                want = min(free, self.settings.claim_batch)
                started = await self._claim(pool, want)
                backoff = 0.2
                if started < want:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)
                    # Let a few more wake-ups (slots freeing, commits) gather: one claim serves them all.
                    await asyncio.sleep(CLAIM_COALESCE_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook_claim_retry", error=f"{type(exc).__name__}: {exc}", retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _claim(self, pool: asyncpg.Pool, want: int) -> int:
        """Claim up to ``want`` due deliveries within each endpoint's free slots; returns how many started."""
        cap = self.settings.endpoint_concurrency
        busy = {key: cap - n for key, n in self._per_target.items()}
        saturated = [key for key, free in busy.items() if free <= 0]
        open_keys = [key for key, free in busy.items() if free > 0]
        rows = await pool.fetch(
            CLAIM_SQL,
            want,
            saturated,
            want * CANDIDATE_LOOKAHEAD,
            self.settings.lease_seconds,
            cap,
            open_keys,
            [busy[k] for k in open_keys],
        )
        surplus: list[str] = []
        started = 0
        for row in rows:
            delivery = Claimed.from_row(row)
            if self._per_target[delivery.cap_key] >= cap or delivery.id in self._in_flight:
                surplus.append(delivery.id)  # callbacks: several URLs may share one host's cap
                continue
            self._per_target[delivery.cap_key] += 1
            self._in_flight[delivery.id] = asyncio.create_task(self._attempt(delivery), name=f"attempt-{delivery.id}")
            started += 1
        if surplus:
            await pool.execute(RELEASE_SQL, surplus)
        return started

    async def _attempt(self, delivery: Claimed) -> None:
        try:
            if delivery.secret is None:  # cannot happen with the schema's invariants; never send unsigned
                outcome = Outcome(None, "no signing secret", 0)
            else:
                payload = self._body(delivery)
                headers = signing.headers(delivery.secret, delivery.event_id, delivery.event_type, payload)
                outcome = await self.transport.send(delivery.url, payload, headers)
        except Exception as exc:  # a bug here must not lose the delivery: it is recorded as a failed attempt
            log.error("webhook_attempt_error", delivery_id=delivery.id, exc_info=True)
            outcome = Outcome(None, f"internal error: {type(exc).__name__}", 0)
        finally:
            if self._per_target[delivery.cap_key] >= self.settings.endpoint_concurrency:
                self._wake.set()  # this endpoint was full: its waiting deliveries can go now
            self._per_target[delivery.cap_key] -= 1
            if self._per_target[delivery.cap_key] <= 0:
                del self._per_target[delivery.cap_key]
            self._in_flight.pop(delivery.id, None)
            self._slot_freed.set()
        ATTEMPTS.labels("succeeded" if outcome.succeeded else "failed").inc()
        ATTEMPT_SECONDS.observe(outcome.duration_ms / 1000)
        self._results.put_nowait(Finished(delivery, outcome, datetime.now(UTC)))

    def _body(self, delivery: Claimed) -> bytes:
        """The bytes to send now: the stored body, with a freshly signed ``outputUrl`` when it has an output key.

        Should signing fail, the stored body goes out as it is (its URL may still be valid): the event matters more.
        """
        if delivery.output_key is None:
            return delivery.payload
        try:
            url = self.storage.signed_url(delivery.output_key, self.settings.output_url_ttl_seconds)
            return with_output_url(delivery.payload, url)
        except Exception as exc:
            log.error("webhook_output_url_failed", delivery_id=delivery.id, error=f"{type(exc).__name__}: {exc}")
            return delivery.payload

    async def _cleanup_loop(self) -> None:
        """Retention: every few minutes, whichever dispatcher gets there first deletes what has aged out."""
        while True:
            await asyncio.sleep(CLEANUP_INTERVAL_SECONDS)
            try:
                await self.purge_expired()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook_retention_failed", error=f"{type(exc).__name__}: {exc}")

    async def purge_expired(self) -> None:
        """Cancel deliveries held past ``held_retention_days``, then delete what is finished past ``retention_days``."""
        pool = await self._connect()
        status = await pool.execute(EXPIRE_HELD_SQL, self.settings.held_retention_days * 86400.0)
        if (expired := int(status.rsplit(" ", 1)[-1])) > 0:
            log.warning(
                "webhook_held_deliveries_canceled", count=expired, older_than_days=self.settings.held_retention_days
            )
        for statement in CLEANUP_SQL:
            await pool.execute(statement, self.settings.retention_days * 86400.0)

    # -- recording -----------------------------------------------------------------------------------------------

    async def _record_loop(self) -> None:
        while True:
            batch = [await self._results.get()]
            while len(batch) < 1000 and not self._results.empty():
                batch.append(self._results.get_nowait())

            async def record(batch: list[Finished] = batch) -> None:
                await self._record(await self._connect(), batch)

            await until_done(record, event="webhook_record_retry")  # an outcome is never dropped
            for _ in batch:
                self._results.task_done()

    async def _record(self, pool: asyncpg.Pool, batch: list[Finished]) -> None:
        now = datetime.now(UTC)
        plans = [self._plan(item, now) for item in batch]
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                INSERT_ATTEMPTS_SQL,
                [f.delivery.id for f in batch],
                [f.at for f in batch],
                [f.outcome.status_code for f in batch],
                [f.outcome.error for f in batch],
                [f.outcome.duration_ms for f in batch],
                [f.outcome.response_body for f in batch],
            )
            await conn.execute(
                UPDATE_DELIVERIES_SQL,
                [f.delivery.id for f in batch],
                [p["status"] for p in plans],
                [p["retry_index"] for p in plans],
                [p["next_at"] for p in plans],
                [f.outcome.status_code for f in batch],
            )
            await _enqueue(conn, [self._delivery_event(f, p) for f, p in zip(batch, plans, strict=True)])
            # Last, so the endpoint rows (shared by every dispatcher's recorder) are locked for the shortest time.
            await _enqueue(conn, await self._update_endpoints(conn, batch, now))
        for item in batch:
            if item.outcome.succeeded:
                DELIVERY_LATENCY.observe(max(0.0, (item.at - item.delivery.event_time).total_seconds()))
            else:
                log.info(
                    "webhook_attempt_failed",
                    delivery_id=item.delivery.id,
                    event_id=item.delivery.event_id,
                    webhook_id=item.delivery.endpoint_id,
                    status_code=item.outcome.status_code,
                    error=item.outcome.error,
                )

    def _plan(self, item: Finished, now: datetime) -> dict[str, Any]:
        """The delivery's next state after this attempt."""
        if item.outcome.succeeded:
            return {"status": "succeeded", "retry_index": item.delivery.retry_index, "next_at": None}
        delay = next_delay(item.outcome, item.delivery.retry_index, self.schedule)
        if delay is None:
            return {"status": "failed", "retry_index": item.delivery.retry_index, "next_at": None}
        return {
            "status": "pending",
            "retry_index": item.delivery.retry_index + 1,
            "next_at": now + timedelta(seconds=delay),
        }

    def _delivery_event(self, item: Finished, plan: dict[str, Any]) -> CloudEvent:
        delivery, outcome = item.delivery, item.outcome
        latency = (item.at - delivery.event_time).total_seconds() * 1000 if outcome.succeeded else None
        return CloudEvent(
            source=SOURCE,
            type="webhook.delivery.succeeded" if outcome.succeeded else "webhook.delivery.failed",
            subject=delivery.id,
            data={
                "deliveryId": delivery.id,
                "eventId": delivery.event_id,
                "eventType": delivery.event_type,
                "userId": delivery.user_id,
                "webhookId": delivery.endpoint_id,
                "target": "callback" if delivery.endpoint_id is None else "endpoint",
                "attempt": delivery.attempt_count + 1,
                "statusCode": outcome.status_code,
                "error": outcome.error,
                "durationMs": outcome.duration_ms,
                "latencyMs": round(latency) if latency is not None else None,
                "final": plan["status"] != "pending",
            },
        )

    async def _update_endpoints(
        self, conn: asyncpg.Connection, batch: list[Finished], now: datetime
    ) -> list[CloudEvent]:
        """Advance each endpoint's failure streak (a success resets it) and disable the ones that crossed a line."""
        by_endpoint: dict[str, list[Finished]] = defaultdict(list)
        for item in batch:
            if item.delivery.endpoint_id is not None:
                by_endpoint[item.delivery.endpoint_id].append(item)
        if not by_endpoint:
            return []
        ids, resets, fails, first_fails, last_successes = [], [], [], [], []
        gone: set[str] = set()
        for endpoint_id, items in by_endpoint.items():
            items.sort(key=lambda f: f.at)
            successes = [i for i, f in enumerate(items) if f.outcome.succeeded]
            after = items[successes[-1] + 1 :] if successes else items
            ids.append(endpoint_id)
            resets.append(bool(successes))
            fails.append(len(after))
            first_fails.append(after[0].at if after else None)
            last_successes.append(items[successes[-1]].at if successes else None)
            if any(f.outcome.gone for f in items):
                gone.add(endpoint_id)
        rows = await conn.fetch(UPDATE_STREAKS_SQL, ids, resets, fails, first_fails, last_successes)
        events: list[CloudEvent] = []
        for row in rows:
            if not row["is_active"] or row["deleted_at"] is not None:
                continue
            reason: str | None = None
            if row["id"] in gone:
                reason = GONE_REASON
            elif should_disable(
                row["failure_count"],
                row["failing_since"],
                now,
                after_failures=self.settings.disable_after_failures,
                after_seconds=self.settings.disable_after_seconds,
            ):
                reason = disable_reason(row["failure_count"], row["failing_since"])
            if reason is None:
                continue
            if await conn.fetchrow(DISABLE_SQL, row["id"], reason) is not None:
                await conn.execute(HOLD_SQL, row["id"])
                log.warning("webhook_endpoint_disabled", webhook_id=row["id"], reason=reason)
                events.append(
                    CloudEvent(
                        source=SOURCE,
                        type="webhook.endpoint.disabled",
                        subject=row["id"],
                        data={"webhookId": row["id"], "userId": row["user_id"], "reason": reason},
                    )
                )
        return events


def with_output_url(payload: bytes, output_url: str) -> bytes:
    """``payload`` (a stored ``{event, timestamp, data}`` body) with ``data.outputUrl`` set: one parse, one dump."""
    body = orjson.loads(payload)
    body["data"]["outputUrl"] = output_url
    return orjson.dumps(body)


async def _enqueue(conn: asyncpg.Connection, events: list[CloudEvent]) -> None:
    """Outbox rows for ``webhook.events`` in the caller's transaction (one statement for the batch)."""
    if not events:
        return
    rows = [outbox_values(WEBHOOK_EVENTS, e) for e in events]
    await conn.execute(
        INSERT_OUTBOX_SQL,
        [r["event_id"] for r in rows],
        [r["topic"] for r in rows],
        [r["key"] for r in rows],
        [orjson.dumps(r["headers"]).decode() for r in rows],
        [r["payload"] for r in rows],
    )
