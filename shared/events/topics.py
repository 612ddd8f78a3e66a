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
"""Consumer groups (committed offsets, lag, autoscaling) and what each reads."""

BROADCAST_READERS: dict[str, list[str]] = {"gateway": [APIKEY_EVENTS]}
"""Readers with no group: every replica reads every partition (cache invalidation)."""

DEAD_LETTER_SUFFIX = ".dlq"


def dead_letter_topic(group: str) -> str:
    """Where ``group`` puts the records it gave up on (a broadcast reader's name stands for its group)."""
    return f"{group}{DEAD_LETTER_SUFFIX}"


def all_topics() -> list[str]:
    """Every topic the platform uses, one dead-letter topic per consumer group and reader included."""
    base = [RENDER_JOBS, RENDER_EVENTS, APIKEY_EVENTS, GATEWAY_REQUESTS, WEBHOOK_EVENTS]
    return base + [dead_letter_topic(g) for g in (*CONSUMER_GROUPS, *BROADCAST_READERS)]
