"""Storing a batch of events: dedupe by id in ``events_seen`` and add only the new ones to the rollups.

One transaction per batch (the ingest rate is the point here), run by the consumer in ``events.py`` before it
commits the batch's offsets. Raw events stay in ``events_seen`` for ``TELEMETRY_RAW_RETENTION_DAYS``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson
import structlog
from aiokafka import ConsumerRecord

from services.telemetry import metrics
from services.telemetry.rollup import Increments, aggregate
from shared.events.envelope import CloudEvent

log = structlog.stdlib.get_logger(__name__)

INSERT_SEEN_SQL = """
INSERT INTO events_seen (event_id, event_type, event_time, data)
SELECT u.id, u.type, u.time, u.data::jsonb
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS u(id, type, time, data)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""

UPSERT_RENDERS_SQL = """
INSERT INTO render_minutes (minute, platform, plugin_version, status, renders, credits)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int[], $6::bigint[])
ON CONFLICT (minute, platform, plugin_version, status) DO UPDATE
SET renders = render_minutes.renders + excluded.renders, credits = render_minutes.credits + excluded.credits
"""

UPSERT_REQUESTS_SQL = """
INSERT INTO request_minutes (minute, platform, plugin_version, method, route, status, error_code, requests)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[],
                     $8::int[])
ON CONFLICT (minute, platform, plugin_version, method, route, status, error_code) DO UPDATE
SET requests = request_minutes.requests + excluded.requests
"""

UPSERT_LATENCY_SQL = """
INSERT INTO latency_minutes (minute, metric, dim1, dim2, bucket, count)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[])
ON CONFLICT (minute, metric, dim1, dim2, bucket) DO UPDATE SET count = latency_minutes.count + excluded.count
"""

UPSERT_WEBHOOKS_SQL = """
INSERT INTO webhook_minutes (minute, outcome, count)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::int[])
ON CONFLICT (minute, outcome) DO UPDATE SET count = webhook_minutes.count + excluded.count
"""

INSERT_ACTIVE_SQL = """
INSERT INTO active_users (minute, platform, plugin_version, user_id)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[])
ON CONFLICT DO NOTHING
"""

PURGE_SQL = "DELETE FROM events_seen WHERE received_at < now() - make_interval(secs => $1)"
"""By arrival, not event time: an event is remembered (deduped) for the retention after it was ingested."""


def parse_records(records: Sequence[ConsumerRecord]) -> list[CloudEvent]:
    """The batch's CloudEvents, each id once; records that are not CloudEvents are counted and skipped."""
    events: dict[str, CloudEvent] = {}
    for record in records:
        try:
            event = CloudEvent.from_kafka(list(record.headers), record.value or b"")
        except ValueError:
            metrics.EVENTS_INGESTED.labels("unknown", "not_a_cloudevent").inc()
            continue
        events.setdefault(event.id, event)
    return list(events.values())


async def store(conn: asyncpg.Connection, events: list[CloudEvent]) -> list[CloudEvent]:
    """Record the events and add the new ones to the rollups, in the caller's transaction; returns the new ones."""
    if not events:
        return []
    inserted = await conn.fetch(
        INSERT_SEEN_SQL,
        [e.id for e in events],
        [e.type for e in events],
        [e.time for e in events],
        [orjson.dumps(e.data).decode() for e in events],
    )
    new_ids = {row["event_id"] for row in inserted}
    fresh = [e for e in events if e.id in new_ids]
    await add_increments(conn, aggregate(fresh))
    return fresh


async def add_increments(conn: asyncpg.Connection, increments: Increments) -> None:
    if increments.renders:
        keys = list(increments.renders)
        credits = [increments.credits.get(k, 0) for k in keys]
        await conn.execute(UPSERT_RENDERS_SQL, *_columns(keys), [increments.renders[k] for k in keys], credits)
    await _upsert_counts(conn, UPSERT_REQUESTS_SQL, increments.requests)
    await _upsert_counts(conn, UPSERT_LATENCY_SQL, increments.latency)
    await _upsert_counts(conn, UPSERT_WEBHOOKS_SQL, increments.webhooks)
    if increments.active:
        await conn.execute(INSERT_ACTIVE_SQL, *_columns(sorted(increments.active)))


async def _upsert_counts(conn: asyncpg.Connection, sql: str, counts: Mapping[Any, int]) -> None:
    """One statement for a whole counter: its key columns, then the count."""
    if counts:
        keys = list(counts)
        await conn.execute(sql, *_columns(keys), [counts[k] for k in keys])


def _columns(keys: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows of key tuples → one list per column (``unnest`` takes columns)."""
    return [list(column) for column in zip(*keys, strict=True)]
