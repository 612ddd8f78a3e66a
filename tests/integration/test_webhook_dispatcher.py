"""The dispatcher as real processes: killed with SIGKILL between attempts, a receiver down for 30 s, two processes
sharing 500 events, and auto-disable after a failure streak (then ``enable``).

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

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks.webhooks import Webhook

from services.webhooks import service
from services.webhooks.config import Settings
from services.webhooks.delivery import Dispatcher
from services.webhooks.models import RegisterWebhookRequest, attempts, deliveries, endpoints
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.engines import EmbeddedKafka, free_port, stop_process
from shared.events.envelope import CloudEvent
from shared.events.topics import RENDER_EVENTS, WEBHOOK_EVENTS
from shared.kafka import make_producer
from shared.testing.fixtures import TEST_PARTITIONS
from shared.testing.kafka import as_event, read_topic, wait_until
from shared.testing.receiver import Receiver, Reply
from shared.testing.servers import serve_in_thread

USER = "user-dispatcher-tests"


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


async def publish_completed(bootstrap: str, count: int = 1) -> list[str]:
    """``render.completed`` events as the render worker publishes them; returns their event ids."""
    producer = make_producer(bootstrap, client_id="test-render-worker")
    await producer.start()
    ids = []
    try:
        for _ in range(count):
            render_id = str(uuid.uuid4())
            event = CloudEvent(
                source="/services/renders",
                type="render.completed",
                subject=render_id,
                data={"renderId": render_id, "userId": USER, "status": "completed", "creditsUsed": 1},
            )
            await producer.send(
                RENDER_EVENTS, value=event.kafka_value(), key=event.kafka_key(), headers=event.kafka_headers()
            )
            ids.append(event.id)
        await producer.flush()
    finally:
        await producer.stop()
    return ids


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
