"""Tables of the ``webhooks`` schema and the camelCase schemas of its HTTP API.

``plugin_webhooks`` holds the endpoints (soft-deleted, so an attempt in flight can still be logged);
``deliveries`` is the durable schedule: one row per event and target, written in the same transaction that records
the event as processed, and worked from by every dispatcher process; ``attempts`` is the append-only attempt log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY

from shared.consumer import processed_events_table
from shared.models import registry_for_schema
from shared.outbox import outbox_broker_table, outbox_table

SCHEMA = "webhooks"
schema_registry = registry_for_schema()
metadata = schema_registry.metadata

RENDER_EVENT_TYPES = ("render.processing", "render.completed", "render.failed", "render.canceled")
TEST_EVENT = "webhook.test"
ALL_EVENTS = "*"
CALLBACK_TARGET = "callback"
"""``deliveries.target_key`` of a delivery to a render's ``callback_url`` (else the endpoint id)."""

NOTIFY_CHANNEL = "webhooks_deliveries"
"""Whatever creates or re-queues deliveries notifies this channel; idle dispatchers ``LISTEN`` on it."""

DeliveryStatus = Literal["pending", "succeeded", "failed", "canceled"]


def _now_column(name: str) -> Column[datetime]:
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())


def _optional_time(name: str) -> Column[datetime]:
    return Column(name, DateTime(timezone=True), nullable=True)


endpoints = Table(
    "plugin_webhooks",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("description", Text, nullable=True),
    Column("events", ARRAY(Text), nullable=False),
    Column("secret", Text, nullable=False),
    Column("is_active", Boolean, nullable=False, server_default=text("true")),
    Column("disabled_reason", Text, nullable=True),
    _optional_time("disabled_at"),
    Column("failure_count", Integer, nullable=False, server_default="0"),
    _optional_time("failing_since"),
    _optional_time("last_success_at"),
    _now_column("created_at"),
    _optional_time("deleted_at"),
    Index("ix_plugin_webhooks_user", "user_id", postgresql_where=text("deleted_at IS NULL")),
    Index("uq_plugin_webhooks_user_url", "user_id", "url", unique=True, postgresql_where=text("deleted_at IS NULL")),
)

callback_secrets = Table(
    "callback_secrets",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("secret", Text, nullable=False),
    _now_column("created_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Text, primary_key=True),
    Column("seq", BigInteger, Identity(), nullable=False, unique=True),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("user_id", Text, nullable=False),
    Column("endpoint_id", Text, ForeignKey("plugin_webhooks.id"), nullable=True),
    Column("target_key", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("output_key", Text, nullable=True),  # a render's output: its outputUrl is signed at each attempt
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempt_count", Integer, nullable=False, server_default="0"),
    Column("retry_index", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True, server_default=func.now()),
    _optional_time("locked_until"),
    Column("last_status_code", Integer, nullable=True),
    _now_column("created_at"),
    _optional_time("completed_at"),
    UniqueConstraint("event_id", "target_key", name="uq_deliveries_event_target"),
    CheckConstraint("status IN ('pending', 'succeeded', 'failed', 'canceled')", name="ck_deliveries_status"),
    Index("ix_deliveries_due", "next_attempt_at", "seq", postgresql_where=text("status = 'pending'")),
    Index("ix_deliveries_endpoint", "endpoint_id", "seq"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("delivery_id", Text, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    _now_column("attempted_at"),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Column("response_body", Text, nullable=True),
    Index("ix_attempts_delivery", "delivery_id", "id"),
)

manual_sends = Table(
    "manual_sends",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("endpoint_id", Text, nullable=False),  # no foreign key: counting must not lock the endpoint row
    Column("sent_at", DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()),
    Index("ix_manual_sends_endpoint", "endpoint_id", "sent_at"),
)
"""One row per ``test``/``resend`` an owner asked for in the last minute: the per-endpoint limit, shared by every
replica (rows older than the window are pruned as new ones are counted)."""

outbox = outbox_table(metadata)
outbox_broker = outbox_broker_table(metadata)
processed_events = processed_events_table(metadata)


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class RegisterWebhookRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"url": "https://studio.example/hooks/renders", "events": ["render.completed", "render.failed"]}
            ]
        },
    )

    url: str = Field(min_length=1, max_length=2048)
    # Checked by the service (with a message naming the allowed values); declared here for the public spec.
    events: list[str] = Field(
        min_length=1, max_length=10, json_schema_extra={"items": {"enum": [*RENDER_EVENT_TYPES, ALL_EVENTS]}}
    )
    secret: str | None = Field(
        None,
        max_length=200,
        description="`whsec_` + standard base64 of at least 24 random bytes; generated when omitted.",
        json_schema_extra={"pattern": "^whsec_[A-Za-z0-9+/]{32,}={0,2}$"},
    )
    description: str | None = Field(None, max_length=500)


class RegisteredWebhook(ApiModel):
    webhook_id: str
    url: str
    secret: str
    events: list[str]
    description: str | None = None
    created_at: datetime


class WebhookView(ApiModel):
    webhook_id: str
    url: str
    events: list[str]
    description: str | None = None
    is_active: bool
    disabled_reason: str | None = None
    created_at: datetime
    last_success_at: datetime | None = None
    failure_count: int


class AttemptView(ApiModel):
    at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: int
    response_body: str | None = None


class DeliveryView(ApiModel):
    delivery_id: str
    event_id: str
    event: str
    status: DeliveryStatus
    attempts: list[AttemptView]
    next_attempt_at: datetime | None = None
    created_at: datetime


class DeliveriesPage(ApiModel):
    deliveries: list[DeliveryView]
    next_cursor: str | None = None


class DeliveryRef(ApiModel):
    delivery_id: str


class CallbackSecret(ApiModel):
    secret: str
