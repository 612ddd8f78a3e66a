"""The dispatcher as real processes: killed with SIGKILL between attempts, a receiver down for 30 s, two processes
sharing 500 events, auto-disable after a failure streak (then ``enable``), events held for a disabled endpoint, and
an ``outputUrl`` signed afresh at every attempt.

Each test has a database and a broker of its own (``isolated_database_url``, ``own_broker``) and starts
``python -m services.webhooks.dispatcher`` with the settings it needs; render events are published to
``render.events`` as the render worker would, and a real local HTTP server receives the deliveries.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks.webhooks import Webhook

from services.webhooks import service, signing
from services.webhooks.config import Settings
from services.webhooks.delivery import Dispatcher
from services.webhooks.models import RegisterWebhookRequest, attempts, deliveries, endpoints
from shared.db import make_engine, make_sessionmaker, plain_dsn, unit_of_work
from shared.engines import EmbeddedKafka, free_port, stop_process
from shared.events.envelope import CloudEvent
from shared.events.topics import RENDER_EVENTS, WEBHOOK_EVENTS
from shared.kafka import make_producer
from shared.storage import FILES_PREFIX, sign, verify_signature
from shared.testing.fixtures import TEST_PARTITIONS
from shared.testing.kafka import as_event, read_topic, wait_until
from shared.testing.receiver import Receiver, Reply
from shared.testing.servers import serve_in_thread

USER = "user-dispatcher-tests"
STORAGE_SECRET = "storage-signing-secret-of-the-dispatcher-tests"
FILES_BASE = "https://files.example"


@dataclass
class Harness:
    database_url: str
    bootstrap: str
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_dispatcher(self, **env: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        environment = dict(os.environ)
        environment.update(
            {
                "APP_ENV": "dev",
                "LOG_LEVEL": "INFO",
                "DATABASE_URL": self.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "KAFKA_PARTITIONS": str(TEST_PARTITIONS),
                "WEBHOOKS_DISPATCHER_PORT": str(port),
                "OUTBOX_POLL_SECONDS": "0.2",
            }
        )
        environment.update(env)
        log = open(self.log_dir / f"dispatcher-{port}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.webhooks.dispatcher"], env=environment, stdout=log, stderr=log
        )
        self.processes.append(proc)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                    return proc, port
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dispatcher did not start: " + self.logs())
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.log_dir.glob("dispatcher-*.log"))


@pytest.fixture
def harness(isolated_database_url: str, own_broker: EmbeddedKafka, tmp_path: Path) -> Iterator[Harness]:
    running = Harness(isolated_database_url, own_broker.bootstrap, tmp_path)
    try:
        yield running
    finally:
        for proc in running.processes:
            stop_process(proc, signal.SIGTERM, 30)


@asynccontextmanager
async def database(url: str) -> AsyncIterator[Any]:
    engine = make_engine(url, schema="webhooks", pool_size=2)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def register(url: str, hook_url: str) -> dict[str, str]:
    async with database(url) as sessions, unit_of_work(sessions) as session:
        created = await service.register(
            session,
            USER,
            RegisterWebhookRequest(url=hook_url, events=["render.completed"]),
            allow_private=True,
            max_endpoints=50,
        )
    return {"id": created.webhook_id, "secret": created.secret}


def completed_event(render_id: str | None = None, **data: Any) -> CloudEvent:
    """A ``render.completed`` event as the render worker publishes it (``data`` adds to its fields)."""
    render_id = render_id or str(uuid.uuid4())
    return CloudEvent(
        source="/services/renders",
        type="render.completed",
        subject=render_id,
        data={"renderId": render_id, "userId": USER, "status": "completed", "creditsUsed": 1, **data},
    )


async def publish(bootstrap: str, events: list[CloudEvent]) -> list[str]:
    """Publish ``events`` to ``render.events``; returns their event ids."""
    producer = make_producer(bootstrap, client_id="test-render-worker")
    await producer.start()
    try:
        for event in events:
            await producer.send(
                RENDER_EVENTS, value=event.kafka_value(), key=event.kafka_key(), headers=event.kafka_headers()
            )
        await producer.flush()
    finally:
        await producer.stop()
    return [event.id for event in events]


async def publish_completed(bootstrap: str, count: int = 1) -> list[str]:
    """``render.completed`` events as the render worker publishes them; returns their event ids."""
    return await publish(bootstrap, [completed_event() for _ in range(count)])


async def rows(url: str, query: Any) -> list[Any]:
    async with database(url) as sessions, sessions() as session:
        s: AsyncSession = session
        return list((await s.execute(query)).all())


async def test_killed_dispatcher_delivers_after_restart(harness: Harness) -> None:
    hooks = Receiver()
    hooks.script("/hook", Reply(500))
    with serve_in_thread(hooks.app) as base:
        webhook = await register(harness.database_url, base + "/hook")
        first_process, _ = harness.start_dispatcher(WEBHOOK_RETRY_SCHEDULE="3")
        (event_id,) = await publish_completed(harness.bootstrap)
        await hooks.wait_for("/hook", 1)

        async def first_attempt_recorded() -> bool:
            found = await rows(harness.database_url, select(deliveries.c.attempt_count, deliveries.c.status))
            return bool(found) and found[0].attempt_count == 1

        await wait_until(first_attempt_recorded, 10)
        first_process.send_signal(signal.SIGKILL)  # between attempts: the retry is due in 3 s (±20%)
        first_process.wait(10)
        await asyncio.sleep(4)
        assert len(hooks.received("/hook")) == 1, "nobody delivers while the dispatcher is dead"

        harness.start_dispatcher(WEBHOOK_RETRY_SCHEDULE="3")
        first, second = await hooks.wait_for("/hook", 2, wait_seconds=30)
        assert second.status == 200
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == event_id
        Webhook(webhook["secret"]).verify(second.body, second.headers)

        async def succeeded() -> bool:
            found = await rows(harness.database_url, select(deliveries.c.status))
            return [r.status for r in found] == ["succeeded"]

        await wait_until(succeeded, 10)
        await asyncio.sleep(0.5)
        assert len(hooks.received("/hook")) == 2


async def test_receiver_down_for_30_seconds_gets_the_event_when_back(harness: Harness) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await register(harness.database_url, base + "/hook")
    harness.start_dispatcher(WEBHOOK_RETRY_SCHEDULE=",".join(["2"] * 40))
    down_since = time.monotonic()
    (event_id,) = await publish_completed(harness.bootstrap)

    async def failing() -> bool:
        return len(await rows(harness.database_url, select(attempts.c.id))) >= 2

    await wait_until(failing, 20)
    await asyncio.sleep(max(0.0, 30 - (time.monotonic() - down_since)))
    logged = await rows(harness.database_url, select(attempts.c.error, attempts.c.status_code))
    assert logged
    assert all(a.status_code is None and a.error.startswith("connection failed") for a in logged)

    hooks = Receiver()
    with serve_in_thread(hooks.app, port=port):
        (received,) = await hooks.wait_for("/hook", 1, wait_seconds=20)
        assert received.headers["webhook-id"] == event_id
        assert orjson.loads(received.body)["event"] == "render.completed"

        async def succeeded() -> bool:
            found = await rows(harness.database_url, select(deliveries.c.status))
            return [r.status for r in found] == ["succeeded"]

        await wait_until(succeeded, 10)
        failed_attempts = len(await rows(harness.database_url, select(attempts.c.id))) - 1
        assert failed_attempts >= 10, "retried all along the 30 s"


async def test_two_dispatchers_deliver_500_events_exactly_once(harness: Harness) -> None:
    hooks = Receiver()
    with serve_in_thread(hooks.app) as base:
        await register(harness.database_url, base + "/hook")
        ports = [harness.start_dispatcher()[1] for _ in range(2)]
        event_ids = await publish_completed(harness.bootstrap, 500)
        received = await hooks.wait_for("/hook", 500, wait_seconds=120)
        await asyncio.sleep(2)  # a duplicate arriving late is still counted
        received = hooks.received("/hook")
        ids = [r.headers["webhook-id"] for r in received]
        assert len(ids) == 500, f"{len(ids) - len(set(ids))} duplicates"
        assert set(ids) == set(event_ids)

        per_process = []
        for port in ports:
            async with httpx.AsyncClient(timeout=5) as client:
                metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            line = next(m for m in metrics.splitlines() if m.startswith('plugin_webhook_attempts_total{outcome="succ'))
            per_process.append(float(line.rsplit(" ", 1)[1]))
        assert sum(per_process) == 500, f"attempts per process {per_process}: an attempt was sent twice"


async def test_failure_streak_disables_then_enable_delivers(harness: Harness) -> None:
    hooks = Receiver()
    hooks.script("/hook", then=Reply(500))
    with serve_in_thread(hooks.app) as base:
        webhook = await register(harness.database_url, base + "/hook")
        harness.start_dispatcher(
            WEBHOOK_RETRY_SCHEDULE=",".join(["0.3"] * 20),
            WEBHOOK_DISABLE_AFTER_FAILURES="4",
            WEBHOOK_DISABLE_AFTER_SECONDS="0.5",
        )
        (event_id,) = await publish_completed(harness.bootstrap)

        async def disabled() -> bool:
            found = await rows(harness.database_url, select(endpoints.c.is_active))
            return found[0].is_active is False

        await wait_until(disabled, 30)
        (endpoint,) = await rows(harness.database_url, select(endpoints))
        assert endpoint.failure_count >= 4
        assert "consecutive failed attempts" in endpoint.disabled_reason
        await asyncio.sleep(1.5)
        attempts_while_disabled = len(hooks.received("/hook"))
        await asyncio.sleep(1.5)
        assert len(hooks.received("/hook")) == attempts_while_disabled, "nothing is sent to a disabled endpoint"
        (held,) = await rows(harness.database_url, select(deliveries.c.status))
        assert held.status == "pending", "the event waits for the endpoint to come back"

        hooks.script("/hook", then=Reply(200))
        async with database(harness.database_url) as sessions, unit_of_work(sessions) as session:
            view = await service.enable(session, USER, webhook["id"])
        assert view.is_active
        assert view.failure_count == 0
        last = (await hooks.wait_for("/hook", attempts_while_disabled + 1))[-1]
        assert last.status == 200
        assert last.headers["webhook-id"] == event_id

    records = await read_topic(harness.bootstrap, WEBHOOK_EVENTS, attempts_while_disabled + 2)
    types = [as_event(r).type for r in records]
    assert types.count("webhook.endpoint.disabled") == 1
    assert types.count("webhook.delivery.failed") == attempts_while_disabled
    assert types.count("webhook.delivery.succeeded") == 1
    succeeded = next(as_event(r) for r in records if as_event(r).type == "webhook.delivery.succeeded")
    assert succeeded.data["final"] is True
    assert succeeded.data["eventId"] == event_id
    assert succeeded.data["latencyMs"] >= 0


async def test_a_slow_endpoint_does_not_delay_the_others(harness: Harness) -> None:
    hooks = Receiver()
    hooks.script("/slow", then=Reply(200, delay=3))
    with serve_in_thread(hooks.app) as base:
        await register(harness.database_url, base + "/slow")
        await register(harness.database_url, base + "/fast")
        harness.start_dispatcher(WEBHOOKS_ENDPOINT_CONCURRENCY="4", WEBHOOKS_MAX_IN_FLIGHT="16")
        await publish_completed(harness.bootstrap, 20)  # each event goes to both endpoints
        await hooks.wait_for("/fast", 20, wait_seconds=30)
        # Every fast delivery arrived while the slow endpoint had at most its 4 slots busy (each takes 3 s).
        assert len(hooks.received("/slow")) <= 4
        await hooks.wait_for("/slow", 20, wait_seconds=60)


async def test_retention_deletes_only_finished_deliveries_past_the_retention(isolated_database_url: str) -> None:
    webhook = await register(isolated_database_url, "https://example.com/hook")
    async with database(isolated_database_url) as sessions, unit_of_work(sessions) as session:
        for name, status, age_days in [
            ("old-done", "succeeded", 40),
            ("old-pending", "pending", 40),
            ("new", "failed", 1),
        ]:
            await session.execute(
                deliveries.insert().values(
                    id=name,
                    event_id=name,
                    event_type="render.completed",
                    event_time=datetime.now(UTC),
                    user_id=USER,
                    endpoint_id=webhook["id"],
                    target_key=webhook["id"],
                    url="https://example.com/hook",
                    payload=b"{}",
                    status=status,
                    completed_at=None if status == "pending" else datetime.now(UTC) - timedelta(days=age_days),
                    created_at=datetime.now(UTC) - timedelta(days=age_days),
                )
            )
            await session.execute(attempts.insert().values(delivery_id=name, duration_ms=1))
    dispatcher = Dispatcher(Settings(app_env="dev", database_url=isolated_database_url, retention_days=30))
    try:
        await dispatcher.purge_expired()
    finally:
        await dispatcher.stop()
    left = await rows(isolated_database_url, select(deliveries.c.id).order_by(deliveries.c.id))
    assert [r.id for r in left] == ["new", "old-pending"]
    assert len(await rows(isolated_database_url, select(attempts.c.id))) == 2


async def test_terminated_dispatcher_finishes_in_flight_attempts_and_loses_nothing(harness: Harness) -> None:
    """SIGTERM mid-batch: no new claims, the attempts in flight finish and are recorded, the process exits; a new
    dispatcher delivers the rest. Every event arrives exactly once."""
    hooks = Receiver()
    hooks.script("/hook", then=Reply(200, delay=1.5))
    with serve_in_thread(hooks.app) as base:
        await register(harness.database_url, base + "/hook")
        first, _ = harness.start_dispatcher(WEBHOOKS_ENDPOINT_CONCURRENCY="8", SHUTDOWN_GRACE_SECONDS="10")
        event_ids = await publish_completed(harness.bootstrap, 40)
        await hooks.wait_for("/hook", 8)  # a batch is in flight (each answer takes 1.5 s)
        first.send_signal(signal.SIGTERM)
        first.wait(30)  # uvicorn re-raises SIGTERM after its graceful shutdown: the exit status says "terminated"
        assert "service_stopped" in harness.logs(), "the lifespan ran to its end"
        in_flight_when_stopped = len(hooks.received("/hook"))
        (recorded,) = await rows(harness.database_url, select(func.count()).select_from(attempts))
        assert recorded[0] == in_flight_when_stopped, "every attempt sent before the exit was recorded"

        harness.start_dispatcher(WEBHOOKS_ENDPOINT_CONCURRENCY="8")
        await hooks.wait_for("/hook", 40, wait_seconds=60)
        await asyncio.sleep(1)
        ids = [r.headers["webhook-id"] for r in hooks.received("/hook")]
        assert sorted(ids) == sorted(event_ids), "each event exactly once"


async def test_events_for_a_disabled_endpoint_are_held_and_sent_once_it_is_enabled(harness: Harness) -> None:
    hooks = Receiver()
    hooks.script("/hook", Reply(410))
    with serve_in_thread(hooks.app) as base:
        webhook = await register(harness.database_url, base + "/hook")
        harness.start_dispatcher()
        await publish_completed(harness.bootstrap)
        await hooks.wait_for("/hook", 1)

        async def disabled() -> bool:
            return (await rows(harness.database_url, select(endpoints.c.is_active)))[0].is_active is False

        await wait_until(disabled, 10)
        (held_event_id,) = await publish_completed(harness.bootstrap)  # arrives while the endpoint is disabled
        held = select(deliveries.c.status, deliveries.c.next_attempt_at).where(deliveries.c.event_id == held_event_id)

        async def recorded() -> bool:
            return bool(await rows(harness.database_url, held))

        await wait_until(recorded, 20)
        (row,) = await rows(harness.database_url, held)
        assert (row.status, row.next_attempt_at) == ("pending", None), "held: kept, and not due"
        async with database(harness.database_url) as sessions, sessions() as session:
            page = await service.list_deliveries(session, USER, webhook["id"], 10, None)
        (view,) = [d for d in page.deliveries if d.event_id == held_event_id]
        assert (view.status, view.next_attempt_at, view.attempts) == ("pending", None, [])
        await asyncio.sleep(1)
        assert len(hooks.received("/hook")) == 1, "nothing is sent to a disabled endpoint"

        async with database(harness.database_url) as sessions, unit_of_work(sessions) as session:
            await service.enable(session, USER, webhook["id"])
        got = await hooks.wait_for("/hook", 2)
        assert got[1].status == 200
        assert got[1].headers["webhook-id"] == held_event_id
        Webhook(webhook["secret"]).verify(got[1].body, got[1].headers)

        async def delivered() -> bool:
            return (await rows(harness.database_url, held))[0].status == "succeeded"

        await wait_until(delivered, 10)


def fresh_output_url_expiry(received: Any, secret: str, key: str, ttl: int) -> int:
    """Check the body a receiver got carries a valid ``outputUrl`` of ``key`` signed at the attempt; its expiry."""
    body = orjson.loads(received.body)
    assert set(body["data"]) <= set(signing.RENDER_DATA_FIELDS), "outputKey stays internal"
    assert "outputKey" not in received.body.decode()
    url = urlsplit(body["data"]["outputUrl"])
    query = parse_qs(url.query)
    expires, signature = query["expires"][0], query["signature"][0]
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{FILES_BASE}{FILES_PREFIX}{key}"
    assert verify_signature(STORAGE_SECRET, key, expires, signature, now=received.at), "valid when it arrived"
    # Signed (whole seconds) just before it was sent: valid for the TTL from the attempt, not from the event.
    assert received.at + ttl - 2 <= int(expires) <= received.at + ttl + 1
    assert Webhook(secret).verify(received.body, received.headers) == body, "signed over the body sent"
    return int(expires)


async def test_each_attempt_carries_an_output_url_signed_when_it_is_sent(harness: Harness) -> None:
    """The body stored at fan-out holds the URL minted when the render completed (here: long expired); every
    attempt, retries and resends alike, gets one valid ``WEBHOOKS_OUTPUT_URL_TTL_SECONDS`` from when it is sent."""
    ttl = 3600
    hooks = Receiver()
    hooks.script("/hook", Reply(500))
    with serve_in_thread(hooks.app) as base:
        webhook = await register(harness.database_url, base + "/hook")
        harness.start_dispatcher(
            WEBHOOK_RETRY_SCHEDULE="2",
            STORAGE_SIGNING_SECRET=STORAGE_SECRET,
            PUBLIC_BASE_URL=FILES_BASE,
            WEBHOOKS_OUTPUT_URL_TTL_SECONDS=str(ttl),
        )
        render_id = str(uuid.uuid4())
        key = f"renders/{render_id}/output.png"
        expired = int(time.time()) - 2 * 86400  # the render completed 3 days ago; its 24 h URL is long gone
        stale_url = f"{FILES_BASE}{FILES_PREFIX}{key}?expires={expired}&signature={sign(STORAGE_SECRET, key, expired)}"
        event = completed_event(render_id, outputUrl=stale_url, outputKey=key)
        (event_id,) = await publish(harness.bootstrap, [event])
        first, second = await hooks.wait_for("/hook", 2, wait_seconds=30)
        assert [first.status, second.status] == [500, 200]
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == event_id
        expiries = [fresh_output_url_expiry(r, webhook["secret"], key, ttl) for r in (first, second)]
        assert orjson.loads(second.body)["data"]["renderId"] == render_id

        async def succeeded() -> bool:
            return [r.status for r in await rows(harness.database_url, select(deliveries.c.status))] == ["succeeded"]

        await wait_until(succeeded, 10)
        (stored,) = await rows(harness.database_url, select(deliveries))
        assert stored.output_key == key
        assert orjson.loads(stored.payload)["data"]["outputUrl"] == stale_url, "the stored body is never rewritten"

        async with database(harness.database_url) as sessions, unit_of_work(sessions) as session:
            await service.resend(session, USER, webhook["id"], stored.id, per_minute=1)
        resent = (await hooks.wait_for("/hook", 3))[2]
        assert resent.headers["webhook-id"] == event_id
        expiries.append(fresh_output_url_expiry(resent, webhook["secret"], key, ttl))
        assert expiries[0] < expiries[1], "each attempt signs its own URL (the retry came 2 s ±20% later)"
        assert expiries[2] >= expiries[1]


async def test_held_deliveries_are_canceled_after_the_held_retention(isolated_database_url: str) -> None:
    webhook = await register(isolated_database_url, "https://example.com/hook")
    now = datetime.now(UTC)
    async with database(isolated_database_url) as sessions, unit_of_work(sessions) as session:
        for name, due, age_days in [("held-old", False, 40), ("held-new", False, 1), ("due-old", True, 40)]:
            await session.execute(
                deliveries.insert().values(
                    id=name,
                    event_id=name,
                    event_type="render.completed",
                    event_time=now - timedelta(days=age_days),
                    user_id=USER,
                    endpoint_id=webhook["id"],
                    target_key=webhook["id"],
                    url="https://example.com/hook",
                    payload=b"{}",
                    next_attempt_at=now if due else None,
                    created_at=now - timedelta(days=age_days),
                )
            )
    settings = Settings(app_env="dev", database_url=isolated_database_url, retention_days=30, held_retention_days=30)
    dispatcher = Dispatcher(settings)
    try:
        await dispatcher.purge_expired()
        states = await rows(
            isolated_database_url,
            select(deliveries.c.id, deliveries.c.status, deliveries.c.completed_at).order_by(deliveries.c.id),
        )
        assert [(r.id, r.status) for r in states] == [
            ("due-old", "pending"),  # due: the dispatcher works on it, retention does not touch it
            ("held-new", "pending"),
            ("held-old", "canceled"),
        ]
        canceled_at = states[2].completed_at
        assert canceled_at is not None
        assert abs((canceled_at - datetime.now(UTC)).total_seconds()) < 60

        async with database(isolated_database_url) as sessions, unit_of_work(sessions) as session:
            await session.execute(
                deliveries.update().where(deliveries.c.id == "held-old").values(completed_at=now - timedelta(days=31))
            )
        await dispatcher.purge_expired()  # finished past the retention: deleted like any finished delivery
    finally:
        await dispatcher.stop()
    left = await rows(isolated_database_url, select(deliveries.c.id).order_by(deliveries.c.id))
    assert [r.id for r in left] == ["due-old", "held-new"]


async def sessions_waiting_on_a_lock(url: str) -> int:
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    finally:
        await conn.close()
    return count


async def test_an_event_arriving_while_the_endpoint_is_enabled_is_not_left_held(isolated_database_url: str) -> None:
    """``enable`` has made the held rows due but not committed yet when an event is fanned out: its row must not be
    held (nothing would ever release it), whichever transaction commits first."""
    url = isolated_database_url
    webhook = await register(url, "https://example.com/hook")
    event = completed_event()
    async with database(url) as sessions:
        async with unit_of_work(sessions) as session:
            await session.execute(endpoints.update().values(is_active=False, disabled_reason="gone"))

        async def consume() -> None:
            async with unit_of_work(sessions) as session:
                await service.fan_out(session, event, USER, None)

        async with unit_of_work(sessions) as enabling:
            await service.enable(enabling, USER, webhook["id"])
            consumer = asyncio.create_task(consume())

            async def consumer_finished_or_waiting() -> bool:
                return consumer.done() or await sessions_waiting_on_a_lock(url) > 0

            await wait_until(consumer_finished_or_waiting, 10)
        await consumer
    (row,) = await rows(url, select(deliveries.c.status, deliveries.c.next_attempt_at))
    assert row.status == "pending"
    assert row.next_attempt_at is not None, "held although its endpoint is active: it would never be sent"
