"""The platform's Prometheus metrics, counted from the events telemetry ingests (each event once: only new ones).

Every service exports its own HTTP and consumer metrics; these are the product-level series (renders by platform,
API errors by code, webhook health, credits) that only the event streams know, plus consumer lag per group.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.events.contracts import (
    EventData,
    GatewayRequestV1,
    RenderEventV1,
    WebhookDeliveryV1,
    WebhookEndpointDisabledV1,
)
from shared.events.envelope import CloudEvent

RENDERS = Counter("plugin_renders_total", "Render state changes", ["platform", "quality", "status"])
RENDER_DURATION = Histogram(
    "plugin_render_duration_seconds",
    "Renderer time of completed renders",
    ["platform"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
API_REQUESTS = Counter("plugin_api_requests_total", "Public API requests", ["platform", "status_class"])
API_ERRORS = Counter("plugin_api_errors_total", "Public API errors", ["platform", "error_code"])
WEBHOOK_DELIVERIES = Counter("plugin_webhook_deliveries_total", "Webhook delivery attempts", ["outcome"])
WEBHOOK_LATENCY = Histogram(
    "plugin_webhook_latency_seconds",
    "Event time → delivered, successful webhook attempts",
    buckets=(0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
WEBHOOK_ENDPOINTS_DISABLED = Counter("plugin_webhook_endpoints_disabled_total", "Webhook endpoints disabled")
CREDITS_USED = Counter("plugin_credits_used_total", "Credits spent by completed renders", ["platform"])
CONSUMER_LAG = Gauge("plugin_consumer_lag", "Records not yet consumed", ["group", "topic"])
DEAD_LETTERS = Gauge(
    "plugin_dead_letters",
    "Records in a group's dead-letter topic (its retention's worth; replay does not remove)",
    ["group"],
)
EVENTS_INGESTED = Counter("plugin_telemetry_events_total", "Events ingested by telemetry", ["type", "outcome"])


def observe(event: CloudEvent, payload: EventData | None) -> None:
    """Count one newly ingested event (its payload parsed once, by ``rollup.typed``) in the product metrics."""
    if isinstance(payload, GatewayRequestV1):
        API_REQUESTS.labels(payload.platform, f"{payload.status // 100}xx").inc()
        if payload.status >= 400:
            API_ERRORS.labels(payload.platform, payload.errorCode or str(payload.status)).inc()
    elif isinstance(payload, RenderEventV1):
        RENDERS.labels(payload.platform, payload.quality or "unknown", payload.status).inc()
        if event.type == "render.completed":
            if payload.processingTime is not None:
                RENDER_DURATION.labels(payload.platform).observe(payload.processingTime)
            if payload.creditsUsed:
                CREDITS_USED.labels(payload.platform).inc(payload.creditsUsed)
    elif isinstance(payload, WebhookDeliveryV1):
        WEBHOOK_DELIVERIES.labels(event.type.rsplit(".", 1)[1]).inc()
        if payload.latencyMs is not None:
            WEBHOOK_LATENCY.observe(payload.latencyMs / 1000)
    elif isinstance(payload, WebhookEndpointDisabledV1):
        WEBHOOK_ENDPOINTS_DISABLED.inc()
