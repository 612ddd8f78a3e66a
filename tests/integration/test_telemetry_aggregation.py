"""Telemetry's numbers on a known event stream, through the real consumer, broker and database.

The stream has every kind of event the summary reads, delivered shuffled (out of order) and with duplicates (the
same event twice on the topic, and again in a later batch); the summary must equal what the stream says, exactly
for counts, within the histogram's ±5% for percentiles.
"""

from __future__ import annotations

import random
import statistics
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.telemetry import service
from services.telemetry.config import Settings
from services.telemetry.events import Ingestor
from services.telemetry.ingest import store
from shared.db import make_engine, make_sessionmaker
from shared.engines import EmbeddedKafka
from shared.events.envelope import CloudEvent
from shared.events.topics import GATEWAY_REQUESTS, RENDER_EVENTS, WEBHOOK_EVENTS
from shared.kafka import make_producer
from shared.testing.kafka import wait_until

BASE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def render_event(status: str, platform: str, version: str | None, user: str, at: datetime, **data: Any) -> CloudEvent:
    render_id = data.pop("renderId", str(uuid.uuid4()))
    return CloudEvent(
        source="/services/renders",
        type=f"render.{status}",
        subject=render_id,
        time=at,
        data={
            "renderId": render_id,
            "userId": user,
            "status": status if status != "created" else "pending",
            "platform": platform,
            "pluginVersion": version,
            "quality": "standard",
            **data,
        },
    )


def request_event(platform: str, route: str, status: int, ms: float, at: datetime, **data: Any) -> CloudEvent:
    return CloudEvent(
        source="/services/gateway",
        type="gateway.request",
        subject=str(uuid.uuid4()),
        time=at,
        data={"requestId": str(uuid.uuid4()), "method": "GET", "route": route, "status": status, "durationMs": ms,
              "platform": platform, **data},
    )  # fmt: skip


def delivery_event(succeeded: bool, latency_ms: int | None, at: datetime) -> CloudEvent:
    return CloudEvent(
        source="/services/webhooks",
        type=f"webhook.delivery.{'succeeded' if succeeded else 'failed'}",
        subject=str(uuid.uuid4()),
        time=at,
        data={"deliveryId": "d", "eventId": "e", "eventType": "render.completed", "userId": "u", "attempt": 1,
              "durationMs": 5, "latencyMs": latency_ms, "final": succeeded},
    )  # fmt: skip


class Stream:
    """The events and what they must add up to."""

    def __init__(self) -> None:
        self.events: list[tuple[str, CloudEvent]] = []
        rng = random.Random(7)
        self.sketchup_render_ms: list[float] = []
        self.sketchup_queue_ms: list[float] = []
        # SketchUp 1.4.2: 40 renders by 3 users, 30 completed (2 credits each), 6 failed, 4 canceled.
        for i in range(40):
            user = f"su-{i % 3}"
            created = BASE + timedelta(minutes=i % 50, seconds=rng.randint(0, 50))
            render_id = str(uuid.uuid4())
            wait = rng.uniform(50, 2000)
            self.sketchup_queue_ms.append(wait)
            processing_at = created + timedelta(milliseconds=wait)
            self.add(RENDER_EVENTS, render_event("created", "sketchup", "1.4.2", user, created, renderId=render_id))
            self.add(
                RENDER_EVENTS,
                render_event(
                    "processing", "sketchup", "1.4.2", user, processing_at, renderId=render_id, createdAt=created
                ),
            )
            final = "completed" if i < 30 else "failed" if i < 36 else "canceled"
            extra: dict[str, Any] = {"renderId": render_id}
            if final == "completed":
                seconds = rng.uniform(1, 20)
                self.sketchup_render_ms.append(seconds * 1000)
                extra |= {"processingTime": seconds, "creditsUsed": 2}
            self.add(
                RENDER_EVENTS,
                render_event(final, "sketchup", "1.4.2", user, processing_at + timedelta(seconds=30), **extra),
            )
        # Revit without a version: 5 renders by one user, 4 completed, 1 failed.
        for i in range(5):
            final = "completed" if i < 4 else "failed"
            extra = {"processingTime": 3.0, "creditsUsed": 5} if final == "completed" else {}
            self.add(RENDER_EVENTS, render_event("created", "revit", None, "rv-1", BASE + timedelta(minutes=i)))
            self.add(
                RENDER_EVENTS, render_event(final, "revit", None, "rv-1", BASE + timedelta(minutes=i + 1), **extra)
            )
        # Requests: 20 from rhino (2 users), 3 of them 404 NOT_FOUND, one anonymous 401.
        for i in range(20):
            status, code = (404, "NOT_FOUND") if i < 3 else (200, None)
            extra = {"userId": f"rh-{i % 2}", "pluginVersion": "7.1"} | ({"errorCode": code} if code else {})
            self.add(
                GATEWAY_REQUESTS, request_event("rhino", "/api/plugins/renders/{id}", status, 10 + i, BASE, **extra)
            )
        self.add(
            GATEWAY_REQUESTS, request_event("unknown", "/api/plugins/credits", 401, 2, BASE, errorCode="AUTH_REQUIRED")
        )
        # Webhooks: 9 succeeded (latency 100..900 ms), 3 failed, one endpoint disabled.
        for i in range(9):
            self.add(WEBHOOK_EVENTS, delivery_event(True, 100 * (i + 1), BASE + timedelta(minutes=i)))
        for i in range(3):
            self.add(WEBHOOK_EVENTS, delivery_event(False, None, BASE + timedelta(minutes=i)))
        self.add(
            WEBHOOK_EVENTS,
            CloudEvent(source="/services/webhooks", type="webhook.endpoint.disabled", subject="w", time=BASE,
                       data={"webhookId": "w", "userId": "u", "reason": "410"}),
        )  # fmt: skip
        # Outside the window: must not count.
        self.add(RENDER_EVENTS, render_event("created", "blender", "4.1", "bl", BASE - timedelta(days=2)))

    def add(self, topic: str, event: CloudEvent) -> None:
        self.events.append((topic, event))


Ingested = tuple[Stream, Any, Ingestor]


@pytest.fixture
async def ingested(isolated_database_url: str, own_broker: EmbeddedKafka) -> AsyncIterator[Ingested]:
    stream = Stream()
    shuffled = list(stream.events)
    random.Random(11).shuffle(shuffled)
    duplicates = shuffled[::5]  # every fifth event published twice
    producer = make_producer(own_broker.bootstrap, client_id="test")
    await producer.start()
    try:
        for topic, event in shuffled + duplicates:
            await producer.send(topic, value=event.kafka_value(), key=event.kafka_key(), headers=event.kafka_headers())
        await producer.flush()
    finally:
        await producer.stop()

    settings = Settings(
        app_env="dev",
        database_url=isolated_database_url,
        kafka_bootstrap_servers=own_broker.bootstrap,
        batch_size=37,  # many batches, so duplicates land in other batches too
        consumer_group=f"telemetry-{uuid.uuid4().hex[:6]}",
    )
    ingestor = Ingestor(settings)
    await ingestor.start()
    engine = make_engine(isolated_database_url, schema="telemetry", pool_size=2)
    sessions = make_sessionmaker(engine)
    try:

        async def all_seen() -> bool:
            pool = await ingestor.pool()
            return int(await pool.fetchval("SELECT count(*) FROM events_seen")) == len(stream.events)

        await wait_until(all_seen, 60)
        async with sessions() as session:
            yield stream, session, ingestor
    finally:
        await ingestor.stop()
        await engine.dispose()


def close(measured: float | None, values: list[float], q: float) -> bool:
    exact = statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]
    return measured is not None and abs(measured - exact) <= 0.1 * exact


async def test_summary_matches_the_stream(ingested: Ingested) -> None:
    stream, session, ingestor = ingested
    summary = await service.summary(session, BASE, BASE + timedelta(hours=3))
    # A replay of everything (a consumer that lost its offsets) adds nothing.
    pool = await ingestor.pool()
    async with pool.acquire() as conn, conn.transaction():
        assert await store(conn, [event for _, event in stream.events]) == []
    await session.rollback()  # a fresh snapshot
    assert await service.summary(session, BASE, BASE + timedelta(hours=3)) == summary

    platforms = {p["platform"]: p for p in summary["platforms"]}
    assert set(platforms) == {"sketchup", "revit", "rhino", "unknown"}, "blender's event is outside the window"

    sketchup = platforms["sketchup"]
    assert sketchup["renders"] == {"created": 40, "processing": 40, "completed": 30, "failed": 6, "canceled": 4}
    assert sketchup["successRate"] == round(30 / 36, 4)
    assert sketchup["creditsSpent"] == 60
    assert sketchup["activeUsers"] == 3
    assert close(sketchup["renderTimeMs"]["p50"], stream.sketchup_render_ms, 0.5)
    assert close(sketchup["renderTimeMs"]["p95"], stream.sketchup_render_ms, 0.95)
    assert close(sketchup["queueWaitMs"]["p50"], stream.sketchup_queue_ms, 0.5)
    assert close(sketchup["queueWaitMs"]["p95"], stream.sketchup_queue_ms, 0.95)
    assert [v["pluginVersion"] for v in sketchup["versions"]] == ["1.4.2"]

    revit = platforms["revit"]
    assert revit["renders"]["completed"] == 4
    assert revit["renders"]["failed"] == 1
    assert revit["successRate"] == 0.8
    assert revit["creditsSpent"] == 20
    assert revit["versions"][0]["pluginVersion"] is None
    assert close(revit["renderTimeMs"]["p50"], [3000.0, 3000.0], 0.5)

    rhino = platforms["rhino"]
    assert rhino["requests"] == 20
    assert rhino["activeUsers"] == 2
    assert rhino["versions"][0]["pluginVersion"] == "7.1"
    assert summary["activeUsers"] == 3 + 1 + 2

    routes = {(r["method"], r["route"]): r for r in summary["routes"]}
    renders_route = routes[("GET", "/api/plugins/renders/{id}")]
    assert renders_route["requests"] == 20
    assert renders_route["errors"] == 3
    assert renders_route["errorRate"] == 0.15
    assert renders_route["errorsByCode"] == {"NOT_FOUND": 3}
    assert close(renders_route["latencyMs"]["p50"], [10.0 + i for i in range(20)], 0.5)
    assert routes[("GET", "/api/plugins/credits")]["errorsByCode"] == {"AUTH_REQUIRED": 1}

    webhooks = summary["webhooks"]
    assert webhooks["attempts"] == 12
    assert webhooks["succeeded"] == 9
    assert webhooks["successRate"] == 0.75
    assert webhooks["disabledEndpoints"] == 1
    assert close(webhooks["latencyMs"]["p95"], [100.0 * (i + 1) for i in range(9)], 0.95)


async def test_window_and_timeseries(ingested: Ingested) -> None:
    _, session, _ = ingested
    first_ten = await service.summary(session, BASE, BASE + timedelta(minutes=10))
    revit = next(p for p in first_ten["platforms"] if p["platform"] == "revit")
    assert revit["renders"]["created"] == 5
    assert revit["renders"]["completed"] == 4  # minutes 1..4; the failure is at minute 5
    assert revit["renders"]["failed"] == 1

    series = await service.timeseries(session, BASE, BASE + timedelta(hours=2), "hour")
    assert len(series["slots"]) == 2
    assert sum(series["renders"]["sketchup"]["created"]) == 40
    assert sum(series["renders"]["revit"]["completed"]) == 4
    assert series["webhooks"]["succeeded"][0] == 9
    assert series["successRate"][0] is not None


@pytest.mark.parametrize(
    ("start", "end"),
    [(timedelta(minutes=7, seconds=30), timedelta(hours=2, minutes=10)), (timedelta(hours=-1), timedelta(hours=3))],
)
async def test_hourly_rollups_agree_with_the_minutes(
    ingested: Ingested, monkeypatch: pytest.MonkeyPatch, start: timedelta, end: timedelta
) -> None:
    """Whole hours are read from the hourly tables, the edges from the minutes: the same numbers either way."""
    _, session, _ = ingested
    since, until = BASE + start, BASE + end
    mixed = await service.summary(session, since, until)
    series = await service.timeseries(session, since, until, "hour")
    window = service._window

    def minutes_only(a: datetime, b: datetime) -> dict[str, datetime]:
        params = window(a, b)
        # No whole hours: everything from the per-minute tables.
        return {**params, "h0": params["until"], "h1": params["until"], "head_end": params["until"]}

    monkeypatch.setattr(service, "_window", minutes_only)
    assert await service.summary(session, since, until) == mixed
    assert await service.timeseries(session, since, until, "hour") == series
