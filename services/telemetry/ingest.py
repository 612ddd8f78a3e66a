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
from sqlalchemy import BigInteger, DateTime, Integer, Table, Text

from services.telemetry import metrics
from services.telemetry.models import ROLLUPS
from services.telemetry.rollup import Increments, Typed, aggregate, typed
from shared.events.envelope import CloudEvent
from shared.faults import PoisonRecord

log = structlog.stdlib.get_logger(__name__)

INSERT_SEEN_SQL = """
INSERT INTO events_seen (event_id, event_type, event_time, data)
SELECT u.id, u.type, u.time, u.data::jsonb
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS u(id, type, time, data)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""

ARRAY_TYPES = {DateTime: "timestamptz", Text: "text", Integer: "int", BigInteger: "bigint"}


def upsert_sql(table: Table) -> str:
    """``INSERT .. SELECT * FROM unnest(one array per column) ON CONFLICT (key) DO UPDATE SET n = n + excluded.n``:
    a whole batch of a rollup in one statement; its non-key columns are counters that add up."""
    names = [c.name for c in table.columns]
    keys = [c.name for c in table.primary_key.columns]
    arrays = ", ".join(f"${i}::{ARRAY_TYPES[type(c.type)]}[]" for i, c in enumerate(table.columns, 1))
    counters = [n for n in names if n not in keys]
    on_conflict = (
        "DO UPDATE SET " + ", ".join(f"{n} = {table.name}.{n} + excluded.{n}" for n in counters)
        if counters
        else "DO NOTHING"
    )
    return (
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT ({', '.join(keys)}) {on_conflict}"
    )


UPSERTS = {name: (upsert_sql(minutes), upsert_sql(hours)) for name, (minutes, hours) in ROLLUPS.items()}

PURGE_SQL = "DELETE FROM events_seen WHERE received_at < now() - make_interval(secs => $1)"
"""By arrival, not event time: an event is remembered (deduped) for the retention after it was ingested."""


def minute_rollup_purges() -> list[str]:
    """One ``DELETE`` per per-minute rollup (parameter: the retention in seconds); the hourly ones are kept."""
    return [
        f"DELETE FROM {minutes.name} WHERE minute < now() - make_interval(secs => $1)"
        for minutes, _ in ROLLUPS.values()
    ]


def parse_records(records: Sequence[ConsumerRecord]) -> list[CloudEvent]:
    """The batch's CloudEvents, each id once. A record that is not one is a poison record when alone (the consumer
    dead-letters it); in a larger batch it fails the batch, which the consumer then splits to isolate it."""
    events: dict[str, CloudEvent] = {}
    for record in records:
        try:
            event = CloudEvent.from_kafka(list(record.headers), record.value or b"")
        except ValueError as exc:
            metrics.EVENTS_INGESTED.labels("unknown", "not_a_cloudevent").inc()
            raise PoisonRecord(f"not a CloudEvent: {exc}") from None
        events.setdefault(event.id, event)
    return list(events.values())


async def store(conn: asyncpg.Connection, events: list[CloudEvent]) -> list[Typed]:
    """Record the events and add the new ones to the rollups, in the caller's transaction; returns the new ones,
    with their payloads parsed (once, for the rollups and the metrics)."""
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
    fresh = [typed(e) for e in events if e.id in new_ids]
    await add_increments(conn, aggregate(fresh))
    return fresh


async def add_increments(conn: asyncpg.Connection, increments: Increments) -> None:
    """Add a batch's increments to the per-minute rollups and, summed per hour, to the hourly ones."""
    renders = {k: (n, increments.credits.get(k, 0)) for k, n in increments.renders.items()}
    for name, rows in (
        ("render", renders),
        ("request", {k: (n,) for k, n in increments.requests.items()}),
        ("latency", {k: (n,) for k, n in increments.latency.items()}),
        ("webhook", {k: (n,) for k, n in increments.webhooks.items()}),
        ("active", dict.fromkeys(increments.active, ())),
    ):
        if not rows:
            continue
        per_minute, per_hour = UPSERTS[name]
        await conn.execute(per_minute, *_columns([key + values for key, values in rows.items()]))
        await conn.execute(per_hour, *_columns([key + values for key, values in _by_hour(rows).items()]))


def _by_hour(rows: Mapping[tuple[Any, ...], tuple[int, ...]]) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """Per-minute keys (time first) summed into per-hour keys."""
    hours: dict[tuple[Any, ...], tuple[int, ...]] = {}
    for key, values in rows.items():
        hour_key = (key[0].replace(minute=0), *key[1:])
        previous = hours.get(hour_key)
        hours[hour_key] = values if previous is None else tuple(a + b for a, b in zip(previous, values, strict=True))
    return hours


def _columns(keys: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows of key tuples → one list per column (``unnest`` takes columns)."""
    return [list(column) for column in zip(*keys, strict=True)]
