"""Tables of the ``telemetry`` schema: the events seen (dedupe + raw retention) and per-minute rollups.

Every rollup row is keyed by its minute and dimensions and only ever incremented, in the same transaction that
records its events in ``events_seen``; an event already seen adds nothing, so redelivery and replays are harmless,
and an event arriving late simply increments the minute it belongs to.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, Table, Text, func
from sqlalchemy.dialects.postgresql import JSONB

from shared.consumer import processed_events_table
from shared.models import registry_for_schema

SCHEMA = "telemetry"
schema_registry = registry_for_schema()
metadata = schema_registry.metadata


def _minute() -> Column[object]:
    return Column("minute", DateTime(timezone=True), primary_key=True)


def _hour() -> Column[object]:
    return Column("hour", DateTime(timezone=True), primary_key=True)


def _key(name: str) -> Column[object]:
    return Column(name, Text, primary_key=True)


events_seen = Table(
    "events_seen",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("event_type", Text, nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("data", JSONB, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_events_seen_received", "received_at"),
)

render_minutes = Table(
    "render_minutes",
    metadata,
    _minute(),
    _key("platform"),
    _key("plugin_version"),
    _key("status"),
    Column("renders", Integer, nullable=False),
    Column("credits", BigInteger, nullable=False),
)

request_minutes = Table(
    "request_minutes",
    metadata,
    _minute(),
    _key("platform"),
    _key("plugin_version"),
    _key("method"),
    _key("route"),
    Column("status", Integer, primary_key=True),
    _key("error_code"),
    Column("requests", Integer, nullable=False),
)

latency_minutes = Table(
    "latency_minutes",
    metadata,
    _minute(),
    _key("metric"),
    _key("dim1"),
    _key("dim2"),
    Column("bucket", Integer, primary_key=True),
    Column("count", Integer, nullable=False),
)

webhook_minutes = Table(
    "webhook_minutes",
    metadata,
    _minute(),
    _key("outcome"),
    Column("count", Integer, nullable=False),
)

active_users = Table(
    "active_users",
    metadata,
    _minute(),
    _key("platform"),
    _key("plugin_version"),
    _key("user_id"),
)


def _hourly(name: str, minutes: Table) -> Table:
    """The same rollup per hour, written with the minutes in one transaction: long windows read these."""
    columns = [_hour()] + [c._copy() for c in minutes.columns if c.name != "minute"]
    return Table(name, metadata, *columns)


render_hours = _hourly("render_hours", render_minutes)
request_hours = _hourly("request_hours", request_minutes)
latency_hours = _hourly("latency_hours", latency_minutes)
webhook_hours = _hourly("webhook_hours", webhook_minutes)
active_users_hours = _hourly("active_users_hours", active_users)

processed_events = processed_events_table(metadata)

ROLLUPS = {
    "render": (render_minutes, render_hours),
    "request": (request_minutes, request_hours),
    "latency": (latency_minutes, latency_hours),
    "webhook": (webhook_minutes, webhook_hours),
    "active": (active_users, active_users_hours),
}
"""Each rollup's per-minute and per-hour table."""
