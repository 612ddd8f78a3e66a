"""Fault injection against a running platform: kill, pause and restart real processes and engines, feed a real bad
record, then check what must always hold (``shared.testing.invariants``).

One stack of its own (its broker, database and processes are broken on purpose), with short timers so each fault
resolves within seconds: a 2 s retry budget before dead-lettering, a 4 s render lease, a 5 s webhook lease, the
reconciler looking at reservations older than 5 s every second. How long recovery took is written to
``test-artifacts/fault_injection.json`` (measured, never asserted).
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from aiokafka import AIOKafkaProducer

from shared.db import plain_dsn
from shared.engines import EmbeddedKafka
from shared.events.envelope import CloudEvent
from shared.kafka import ensure_topics
from shared.testing.fixtures import (
    TEST_PARTITIONS,
    Stack,
    gemini_env,
    killable_broker,
    migrated_database,
    running_stack,
    sign_up,
)
from shared.testing.invariants import Subscriber, check_invariants
from shared.testing.kafka import as_event, read_topic, wait_until
from shared.testing.receiver import Receiver, Reply
from shared.testing.renders import GEMINI_MODEL, submission
from shared.testing.servers import serve_in_thread

ARTIFACT = Path(os.environ.get("TEST_ARTIFACTS_DIR", "test-artifacts")) / "fault_injection.json"
MEASURED: dict[str, float] = {}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    with killable_broker(tmp_path_factory.mktemp("kafka")) as kafka:
        yield kafka


@pytest.fixture(scope="module")
def database(postgres_server_url: str) -> Iterator[str]:
    with migrated_database(postgres_server_url) as url:
        yield url


@pytest.fixture(scope="module")
def fault_stack(
    database: str,
    redis_url: str,
    broker: EmbeddedKafka,
    fake_gemini_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    extra = {
        **gemini_env(fake_gemini_url),
        "SIGNUP_CREDITS": "1000",
        "CONSUMER_RETRY_BUDGET_SECONDS": "2",
        "KAFKA_CLUSTER_CHECK_SECONDS": "1",
        "CREDITS_RECONCILE_AFTER_SECONDS": "5",
        "CREDITS_RECONCILE_INTERVAL_SECONDS": "1",
        "RENDERS_WATCHDOG_INTERVAL_SECONDS": "1",
        "WEBHOOKS_LEASE_SECONDS": "5",
        "SHUTDOWN_GRACE_SECONDS": "5",
    }
    with running_stack(database, broker.bootstrap, redis_url, tmp_path_factory.mktemp("faults"), extra) as stack:
        yield stack
    if MEASURED:
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        ARTIFACT.write_text(json.dumps(MEASURED, indent=2))


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    hooks = Receiver()
    with serve_in_thread(hooks.app) as url:
        yield hooks, url


@pytest.fixture
async def client(fault_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fault_stack.gateway_url, timeout=30) as http:
        yield http


async def subscriber(client: httpx.AsyncClient, receiver_url: str) -> Subscriber:
    """A new user with a webhook endpoint for every event; their renders call back to a path of their own."""
    user = await sign_up(client)
    tag = uuid.uuid4().hex[:10]
    sub = Subscriber(user, f"/hooks/{tag}", f"/callbacks/{tag}")
    registered = await client.post(
        "/api/plugins/webhooks/register",
        headers=user.bearer,
        json={"url": receiver_url + sub.endpoint_path, "events": ["*"]},
    )
    assert registered.status_code == 201, registered.text
    return sub


async def submit(client: httpx.AsyncClient, sub: Subscriber, receiver_url: str, count: int, **fields: Any) -> None:
    for _ in range(count):
        body = submission(callback_url=receiver_url + sub.callback_path, **fields)
        response = await client.post("/api/plugins/renders", headers=sub.user.bearer, json=body)
        assert response.status_code == 202, response.text
        sub.render_ids.append(response.json()["data"]["renderId"])


async def child(stack: Stack, module: str) -> psutil.Process:
    """The running process of ``module`` under the stack's supervisor (waiting for a restarted one to appear)."""
    supervisor = psutil.Process(stack.supervisor_pid)
    for _ in range(100):
        for process in supervisor.children():
            try:
                if process.cmdline()[-1] == module and process.is_running():
                    return process
            except (psutil.NoSuchProcess, IndexError):
                continue
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {module} process")


async def kill(stack: Stack, module: str, sig: int = signal.SIGKILL) -> None:
    """Signal ``module``'s process, wait for it to be gone and for the supervisor's replacement."""
    victim = await child(stack, module)
    victim.send_signal(sig)
    await asyncio.to_thread(victim.wait, 30)  # SIGTERM: gone within its grace; psutil raises TimeoutExpired else

    async def restarted() -> bool:
        return (await child(stack, module)).pid != victim.pid

    await wait_until(restarted, wait_seconds=30)


async def any_status(client: httpx.AsyncClient, sub: Subscriber, status: str) -> bool:
    for render_id in sub.render_ids:
        data = (await client.get(f"/api/plugins/renders/{render_id}", headers=sub.user.bearer)).json()["data"]
        if data["status"] == status:
            return True
    return False


async def db_execute(database: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(plain_dsn(database))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_a_poison_record_on_every_partition_stalls_nothing(
    client: httpx.AsyncClient, fault_stack: Stack, broker: EmbeddedKafka, database: str, receiver: tuple
) -> None:
    """A ``render.events`` record PostgreSQL refuses (a NUL in its id) on every partition: credits, webhooks and
    telemetry each dead-letter it after their budget, and renders completed after it are settled and delivered."""
    hooks, url = receiver
    sub = await subscriber(client, url)
    key = f"poison-{uuid.uuid4().hex[:8]}"
    poison = CloudEvent(
        id=f"bad\x00{key}",
        source="/tests",
        type="render.completed",
        subject=key,
        data={"renderId": key, "userId": sub.user.user_id, "status": "completed"},
    )
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for partition in range(TEST_PARTITIONS):
            await producer.send_and_wait(
                "render.events",
                poison.kafka_value(),
                key=key.encode(),
                headers=poison.kafka_headers(),
                partition=partition,
            )
    finally:
        await producer.stop()
    poisoned = time.monotonic()
    await submit(client, sub, url, 3)
    await check_invariants(client, database, hooks, [sub])
    MEASURED["poison_record_to_next_render_settled_seconds"] = round(time.monotonic() - poisoned, 2)
    for group in ("credits", "webhooks", "telemetry"):
        letters = [r for r in await read_topic(broker.bootstrap, f"{group}.dlq", expected=3) if r.key == key.encode()]
        assert len(letters) == TEST_PARTITIONS, f"{group}: {len(letters)} dead letters"
        headers = {k: v.decode() for k, v in letters[0].headers}
        assert headers["x-dlq-group"] == group
        assert headers["x-dlq-topic"] == "render.events"


async def test_a_dead_letter_is_replayed_once_its_cause_is_fixed(
    client: httpx.AsyncClient, fault_stack: Stack, broker: EmbeddedKafka, database: str, receiver: tuple
) -> None:
    """Credits refuses a capture (a bug, simulated by a trigger): the event is dead-lettered; once the cause is
    gone, ``python -m shared.deadletters replay`` republishes it and credits consumes it (its event id recorded)."""
    hooks, url = receiver
    sub = await subscriber(client, url)
    function = f"credits.refuse_{uuid.uuid4().hex[:8]}"
    await db_execute(
        database,
        f"""CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.kind = 'capture' AND NEW.user_id = '{sub.user.user_id}' THEN
            RAISE EXCEPTION 'capture refused for the test'; END IF; RETURN NEW; END $$""",
    )
    await db_execute(
        database, f"CREATE TRIGGER refuse BEFORE INSERT ON credits.ledger FOR EACH ROW EXECUTE FUNCTION {function}()"
    )
    try:
        await submit(client, sub, url, 1)
        render_id = sub.render_ids[0]

        async def dead_lettered() -> bool:
            records = await read_topic(broker.bootstrap, "credits.dlq", expected=10**6, wait_seconds=1)
            return any(r.key == render_id.encode() for r in records)

        await wait_until(dead_lettered, wait_seconds=60)
    finally:
        await db_execute(database, "DROP TRIGGER refuse ON credits.ledger")
        await db_execute(database, f"DROP FUNCTION {function}()")
    letters = await read_topic(broker.bootstrap, "credits.dlq", expected=10**6, wait_seconds=1)
    mine = [r for r in letters if r.key == render_id.encode()]
    completed_id = as_event(mine[0]).id
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}
    cli = [sys.executable, "-m", "shared.deadletters"]
    listed = await asyncio.to_thread(
        subprocess.run, [*cli, "list", "credits"], env=env, capture_output=True, text=True, check=True
    )
    assert completed_id in listed.stdout
    positions = [f"{r.partition}:{r.offset}" for r in mine]
    replayed = await asyncio.to_thread(
        subprocess.run, [*cli, "replay", "credits", *positions], env=env, capture_output=True, text=True
    )
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {len(mine)} record(s)" in replayed.stdout

    async def consumed() -> bool:
        rows = await db_execute(database, "SELECT 1 FROM credits.processed_events WHERE event_id = $1", completed_id)
        return bool(rows)

    await wait_until(consumed, wait_seconds=60)
    await check_invariants(client, database, hooks, [sub])


async def test_broker_killed_while_credits_and_the_dispatcher_are_paused(
    client: httpx.AsyncClient, fault_stack: Stack, broker: EmbeddedKafka, database: str, receiver: tuple
) -> None:
    """Settlements and deliveries still unconsumed die with the in-memory broker (kill -9); the relays see a new
    cluster and publish the recent window again, the consumers start over on the new broker, and every render is
    settled and delivered once."""
    hooks, url = receiver
    sub = await subscriber(client, url)
    await submit(client, sub, url, 3, model=GEMINI_MODEL, prompt="SLOW_2")  # accepted (reserved) before the pause
    paused = [await child(fault_stack, "services.credits"), await child(fault_stack, "services.webhooks.dispatcher")]
    for process in paused:
        process.suspend()
    try:
        for render_id in sub.render_ids:

            async def done(render_id: str = render_id) -> bool:
                response = await client.get(f"/api/plugins/renders/{render_id}", headers=sub.user.bearer)
                return bool(response.json()["data"]["status"] == "completed")

            await wait_until(done, wait_seconds=60)

        async def published() -> bool:
            rows = await db_execute(database, "SELECT count(*) AS n FROM renders.outbox WHERE sent_at IS NULL")
            return bool(rows[0]["n"] == 0)

        await wait_until(published, wait_seconds=30)  # the completions are on the broker, not yet consumed
        broker.proc.kill()  # type: ignore[union-attr]
        broker.proc.wait()  # type: ignore[union-attr]
        broker.start()
        await ensure_topics(broker.bootstrap, TEST_PARTITIONS)  # what `make run`'s supervisor does
        restarted = time.monotonic()
    finally:
        for process in paused:
            process.resume()
    await check_invariants(client, database, hooks, [sub])
    MEASURED["broker_restart_to_lost_settlements_settled_seconds"] = round(time.monotonic() - restarted, 2)


async def test_render_worker_killed_mid_render(
    client: httpx.AsyncClient, fault_stack: Stack, database: str, receiver: tuple
) -> None:
    hooks, url = receiver
    sub = await subscriber(client, url)
    await submit(client, sub, url, 2, model=GEMINI_MODEL, prompt="SLOW_3")
    await wait_until(lambda: any_status(client, sub, "processing"), wait_seconds=30, interval=0.05)
    await kill(fault_stack, "services.renders.worker")
    await check_invariants(client, database, hooks, [sub])


async def test_credits_killed_while_settling_a_burst(
    client: httpx.AsyncClient, fault_stack: Stack, database: str, receiver: tuple
) -> None:
    hooks, url = receiver
    sub = await subscriber(client, url)
    await submit(client, sub, url, 8)

    async def settling() -> bool:
        rows = await db_execute(
            database,
            "SELECT count(*) AS n FROM credits.ledger WHERE kind = 'capture' AND reference = ANY($1::text[])",
            sub.render_ids,
        )
        return bool(rows[0]["n"] >= 1)

    await wait_until(settling, wait_seconds=60, interval=0.02)
    await kill(fault_stack, "services.credits")
    await check_invariants(client, database, hooks, [sub])


async def test_dispatcher_killed_mid_delivery(
    client: httpx.AsyncClient, fault_stack: Stack, database: str, receiver: tuple
) -> None:
    """Attempts in flight when the dispatcher dies are attempted again after their lease, under the same id."""
    hooks, url = receiver
    sub = await subscriber(client, url)
    slow = Reply(200, delay=3)
    hooks.script(sub.endpoint_path, slow, slow, slow, slow)
    hooks.script(sub.callback_path, slow, slow, slow, slow)
    await submit(client, sub, url, 2)
    await hooks.wait_for(sub.endpoint_path, 1, wait_seconds=60)
    await kill(fault_stack, "services.webhooks.dispatcher")
    await check_invariants(client, database, hooks, [sub])


async def test_every_database_connection_terminated_twice_during_renders(
    client: httpx.AsyncClient, fault_stack: Stack, database: str, receiver: tuple
) -> None:
    hooks, url = receiver
    sub = await subscriber(client, url)
    await submit(client, sub, url, 3, model=GEMINI_MODEL, prompt="SLOW_2")
    await submit(client, sub, url, 2)
    await wait_until(lambda: any_status(client, sub, "processing"), wait_seconds=30, interval=0.05)
    name = database.rsplit("/", 1)[1]
    for _ in range(2):
        terminated = await db_execute(
            database,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        assert terminated, "connections were cut"
        await asyncio.sleep(1)  # the second cut lands on the reconnected pools
    await check_invariants(client, database, hooks, [sub])


@pytest.mark.parametrize(
    "module",
    ["services.renders.worker", "services.credits", "services.webhooks.dispatcher", "services.telemetry"],
)
async def test_sigterm_of_a_consumer_mid_work(
    client: httpx.AsyncClient, fault_stack: Stack, database: str, receiver: tuple, module: str
) -> None:
    hooks, url = receiver
    sub = await subscriber(client, url)
    await submit(client, sub, url, 2, model=GEMINI_MODEL, prompt="SLOW_2")
    await submit(client, sub, url, 3)
    await wait_until(lambda: any_status(client, sub, "processing"), wait_seconds=30, interval=0.05)
    await kill(fault_stack, module, signal.SIGTERM)
    await check_invariants(client, database, hooks, [sub])
