"""Versioned event payloads. A consumer parses the types it knows with these models and ignores the rest.

Adding an optional field is a compatible change; anything else is a new ``type`` version (e.g. ``.v2``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

RenderStatus = Literal["pending", "processing", "completed", "failed", "canceled"]


class EventData(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")


class RenderEventV1(EventData):
    """``render.created|processing|completed|failed|canceled``: the state of a render after the change."""

    renderId: str
    userId: str
    status: RenderStatus
    quality: str | None = None
    style: str | None = None
    aspectRatio: str | None = None
    model: str | None = None
    platform: str = "unknown"
    pluginVersion: str | None = None
    projectId: str | None = None
    creditsCost: int | None = None
    creditsUsed: int | None = None
    outputUrl: str | None = None
    """A signed download URL, valid ``RENDERS_OUTPUT_URL_TTL_SECONDS`` from the event; consumers that hand it out
    later (webhook retries, resends) sign a fresh one from ``outputKey``."""
    outputKey: str | None = None
    """The output's storage key (``render.completed``)."""
    error: str | None = None
    errorCode: str | None = None
    processingTime: float | None = None
    callbackUrl: str | None = None
    createdAt: datetime | None = None


class RenderJobV1(EventData):
    """``render.job.requested`` on ``render.jobs``: the work order a render worker picks up."""

    renderId: str
    userId: str
    attempt: int = 1


class ApiKeyRevokedV1(EventData):
    """``apikey.revoked``: every gateway replica drops the key from its cache."""

    keyId: str
    userId: str
    keyHash: str | None = None


class UserDeletedV1(EventData):
    """``user.deleted``: gateways refuse the user's still-unexpired access tokens and drop their cached keys."""

    userId: str


class GatewayRequestV1(EventData):
    """``gateway.request``: one public request, for telemetry (published in batches, off the request path)."""

    requestId: str
    method: str
    route: str
    status: int
    durationMs: float
    platform: str = "unknown"
    pluginVersion: str | None = None
    userId: str | None = None
    errorCode: str | None = None


class WebhookDeliveryV1(EventData):
    """``webhook.delivery.succeeded|failed``: one attempt's outcome (``final``: no retry follows), for telemetry."""

    deliveryId: str
    eventId: str
    eventType: str
    userId: str
    webhookId: str | None = None
    target: Literal["endpoint", "callback"] = "endpoint"
    attempt: int
    statusCode: int | None = None
    error: str | None = None
    durationMs: int
    latencyMs: int | None = None
    """Event time → this attempt's answer, on success: what a receiver waits for a render's news."""
    final: bool


class WebhookEndpointDisabledV1(EventData):
    """``webhook.endpoint.disabled``: the dispatcher stopped delivering to an endpoint, and why."""

    webhookId: str
    userId: str
    reason: str


EVENT_TYPES: dict[str, type[EventData]] = {
    "render.created": RenderEventV1,
    "render.processing": RenderEventV1,
    "render.completed": RenderEventV1,
    "render.failed": RenderEventV1,
    "render.canceled": RenderEventV1,
    "render.job.requested": RenderJobV1,
    "apikey.revoked": ApiKeyRevokedV1,
    "user.deleted": UserDeletedV1,
    "gateway.request": GatewayRequestV1,
    "webhook.delivery.succeeded": WebhookDeliveryV1,
    "webhook.delivery.failed": WebhookDeliveryV1,
    "webhook.endpoint.disabled": WebhookEndpointDisabledV1,
}


def parse_data(event_type: str, data: dict[str, object]) -> EventData | None:
    """The typed payload of a known event type, or ``None`` for a type this code does not know."""
    model = EVENT_TYPES.get(event_type)
    return model.model_validate(data) if model else None
