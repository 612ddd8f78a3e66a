"""Topic names, in one place so producers, consumers and the topic bootstrap agree."""

from __future__ import annotations

RENDER_JOBS = "render.jobs"
RENDER_EVENTS = "render.events"
APIKEY_EVENTS = "apikey.events"
GATEWAY_REQUESTS = "gateway.requests"
WEBHOOK_EVENTS = "webhook.events"

CONSUMER_GROUPS: dict[str, list[str]] = {
    "render-workers": [RENDER_JOBS],
    "credits": [RENDER_EVENTS],
    "webhooks": [RENDER_EVENTS],
    "telemetry": [RENDER_EVENTS, GATEWAY_REQUESTS, WEBHOOK_EVENTS],
}


def dlq(topic: str) -> str:
    """The dead-letter topic of a consumed topic."""
    return f"{topic}.dlq"


def all_topics() -> list[str]:
    """Every topic the platform uses, dead-letter topics included, created at start-up."""
    base = [RENDER_JOBS, RENDER_EVENTS, APIKEY_EVENTS, GATEWAY_REQUESTS, WEBHOOK_EVENTS]
    consumed = sorted({t for topics in CONSUMER_GROUPS.values() for t in topics})
    return base + [dlq(t) for t in consumed]
