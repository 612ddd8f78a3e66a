"""Events → per-minute increments: a pure function of a batch, so the arithmetic is tested without a database.

Only events not seen before reach this (the caller dedupes by event id in the same transaction). Each event counts
in the minute of its own ``time``, so the order in which events arrive does not change any total.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from services.telemetry.histogram import bucket_of
from shared.events.contracts import (
    EventData,
    GatewayRequestV1,
    RenderEventV1,
    WebhookDeliveryV1,
    WebhookEndpointDisabledV1,
    parse_data,
)
from shared.events.envelope import CloudEvent

NO_VERSION = ""
"""``plugin_version`` of a request or render that did not say (a key column cannot be NULL)."""

RENDER_STATUSES = ("created", "processing", "completed", "failed", "canceled")
RENDER_TIME = "render_time"
QUEUE_WAIT = "queue_wait"
ROUTE_LATENCY = "route"
WEBHOOK_LATENCY = "webhook"


@dataclass
class Increments:
    """What one batch adds to each rollup table, already summed per key (one upsert row per key)."""

    renders: Counter[tuple[datetime, str, str, str]] = field(default_factory=Counter)
    credits: Counter[tuple[datetime, str, str, str]] = field(default_factory=Counter)
    requests: Counter[tuple[datetime, str, str, str, str, int, str]] = field(default_factory=Counter)
    latency: Counter[tuple[datetime, str, str, str, int]] = field(default_factory=Counter)
    webhooks: Counter[tuple[datetime, str]] = field(default_factory=Counter)
    active: set[tuple[datetime, str, str, str]] = field(default_factory=set)
    ignored: int = 0


def minute_of(moment: datetime) -> datetime:
    """The UTC minute of an event (a naive time is taken as UTC), so per-hour sums are UTC hours everywhere."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.replace(second=0, microsecond=0)


Typed = tuple[CloudEvent, EventData | None]
"""An event and its payload parsed once (``None``: a type telemetry does not know, or a payload that does not
parse); the rollups and the Prometheus metrics both read it."""


def typed(event: CloudEvent) -> Typed:
    try:
        return event, parse_data(event.type, event.data)
    except ValidationError:
        return event, None


def add_event(increments: Increments, event: CloudEvent, payload: EventData | None) -> None:
    """Fold one event into ``increments``; malformed or unknown events are counted as ignored."""
    if isinstance(payload, GatewayRequestV1):
        _request(increments, event, payload)
    elif isinstance(payload, RenderEventV1) and event.type.removeprefix("render.") in RENDER_STATUSES:
        _render(increments, event, payload)
    elif isinstance(payload, WebhookDeliveryV1):
        _delivery(increments, event, payload)
    elif isinstance(payload, WebhookEndpointDisabledV1):
        increments.webhooks[(minute_of(event.time), "disabled")] += 1
    else:
        increments.ignored += 1


def aggregate(events: list[Typed]) -> Increments:
    increments = Increments()
    for event, payload in events:
        add_event(increments, event, payload)
    return increments


def _request(increments: Increments, event: CloudEvent, data: GatewayRequestV1) -> None:
    minute = minute_of(event.time)
    version = data.pluginVersion or NO_VERSION
    key = (minute, data.platform, version, data.method, data.route, data.status, data.errorCode or "")
    increments.requests[key] += 1
    increments.latency[(minute, ROUTE_LATENCY, data.method, data.route, bucket_of(data.durationMs))] += 1
    if data.userId:
        increments.active.add((minute, data.platform, version, data.userId))


def _render(increments: Increments, event: CloudEvent, data: RenderEventV1) -> None:
    minute = minute_of(event.time)
    version = data.pluginVersion or NO_VERSION
    status = event.type.removeprefix("render.")
    key = (minute, data.platform, version, status)
    increments.renders[key] += 1
    if status == "completed" and data.creditsUsed:
        increments.credits[key] += data.creditsUsed
    increments.active.add((minute, data.platform, version, data.userId))
    if status == "processing" and data.createdAt is not None:
        waited = (event.time - data.createdAt).total_seconds() * 1000
        increments.latency[(minute, QUEUE_WAIT, data.platform, version, bucket_of(max(0.0, waited)))] += 1
    if status == "completed" and data.processingTime is not None:
        bucket = bucket_of(data.processingTime * 1000)
        increments.latency[(minute, RENDER_TIME, data.platform, version, bucket)] += 1


def _delivery(increments: Increments, event: CloudEvent, data: WebhookDeliveryV1) -> None:
    minute = minute_of(event.time)
    outcome = "succeeded" if event.type.endswith("succeeded") else "failed"
    increments.webhooks[(minute, outcome)] += 1
    if outcome == "succeeded" and data.latencyMs is not None:
        increments.latency[(minute, WEBHOOK_LATENCY, data.target, "", bucket_of(data.latencyMs))] += 1
