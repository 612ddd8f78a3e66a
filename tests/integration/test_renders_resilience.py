"""Renders survive a broker outage and a worker killed mid-render (a stack of their own: these tests break it)."""

import os
import signal
from collections.abc import AsyncIterator, Iterator

import httpx
import psutil
import pytest

from shared.engines import EmbeddedKafka
from shared.kafka import ensure_topics
from shared.testing.fixtures import (
    TEST_PARTITIONS,
    PluginUser,
    Stack,
    gemini_env,
    killable_broker,
    migrated_database,
    running_stack,
    sign_up,
)
from shared.testing.kafka import as_event, read_topic, wait_until
from shared.testing.renders import GEMINI_MODEL, balance, submission, wait_final


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    with killable_broker(tmp_path_factory.mktemp("kafka")) as kafka:
        yield kafka


@pytest.fixture(scope="module")
def fragile_stack(
    postgres_server_url: str,
    redis_url: str,
    broker: EmbeddedKafka,
    fake_gemini_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    with migrated_database(postgres_server_url) as url:
        extra = {
            **gemini_env(fake_gemini_url),
            "MAX_UPLOAD_BYTES": str(1024 * 1024),
            "CREDITS_CONSUMER_GROUP": "credits",
            "SHUTDOWN_GRACE_SECONDS": "5",
        }
        with running_stack(url, broker.bootstrap, redis_url, tmp_path_factory.mktemp("fragile"), extra) as stack:
            yield stack


@pytest.fixture
async def client(fragile_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fragile_stack.gateway_url, timeout=30) as http:
        yield http


async def test_creates_succeed_while_the_broker_is_down_and_complete_when_it_returns(
    client: httpx.AsyncClient, broker: EmbeddedKafka
) -> None:
    user = await sign_up(client)
    broker.stop()
    try:
        responses = [
            await client.post("/api/plugins/renders", headers=user.bearer, json=submission()) for _ in range(2)
        ]
        assert [r.status_code for r in responses] == [202, 202], [r.text for r in responses]
    finally:
        broker.start()
        await ensure_topics(broker.bootstrap, TEST_PARTITIONS)  # the embedded broker forgets topics on restart
    for response in responses:
        final = await wait_final(client, response.json()["data"]["renderId"], user.bearer, wait_seconds=120)
        assert final["status"] == "completed", final

    async def charged() -> bool:
        return (await balance(client, user.bearer))["totalSpent"] == 10

    await wait_until(charged, wait_seconds=60)


def render_worker(stack: Stack) -> psutil.Process:
    supervisor = psutil.Process(stack.supervisor_pid)
    return next(p for p in supervisor.children() if "services.renders.worker" in " ".join(p.cmdline()))


async def test_worker_killed_mid_render_still_completes_once(
    client: httpx.AsyncClient, fragile_stack: Stack, broker: EmbeddedKafka
) -> None:
    user: PluginUser = await sign_up(client)
    response = await client.post(
        "/api/plugins/renders", headers=user.bearer, json=submission(model=GEMINI_MODEL, prompt="SLOW_3")
    )
    render_id = response.json()["data"]["renderId"]

    async def processing() -> bool:
        data = (await client.get(f"/api/plugins/renders/{render_id}", headers=user.bearer)).json()["data"]
        return bool(data["status"] == "processing")

    await wait_until(processing, wait_seconds=30, interval=0.05)
    victim = render_worker(fragile_stack)
    os.kill(victim.pid, signal.SIGKILL)  # no goodbye: the lease lapses, the job is redelivered, another claim redoes it
    final = await wait_final(client, render_id, user.bearer, wait_seconds=120)
    assert final["status"] == "completed", final
    assert render_worker(fragile_stack).pid != victim.pid, "the supervisor restarted the worker"

    async def charged() -> bool:
        return (await balance(client, user.bearer))["totalSpent"] == 5

    await wait_until(charged, wait_seconds=30)
    records = await read_topic(broker.bootstrap, "render.events", expected=10**6, wait_seconds=3)
    types = [as_event(r).type for r in records if r.key == render_id.encode()]
    assert types.count("render.completed") == 1, types
    assert (await balance(client, user.bearer))["balance"] == 5


async def render_events(broker: EmbeddedKafka, render_id: str) -> list[str]:
    records = await read_topic(broker.bootstrap, "render.events", expected=10**6, wait_seconds=3)
    return [as_event(r).type for r in records if r.key == render_id.encode()]


async def diagnosis(broker: EmbeddedKafka, stack: Stack, render_id: str) -> str:
    """What a render left on the topic and what credits logged lately: for a capture that did not come."""
    log = (stack.var_dir / "log" / "credits.log").read_text(errors="replace").splitlines()
    notable = [line for line in log if render_id in line or "error" in line.lower() or "assigned" in line][-30:]
    return f"not charged; events {await render_events(broker, render_id)}; credits log:\n" + "\n".join(notable)


async def start_slow_render(client: httpx.AsyncClient, user: PluginUser, seconds: float) -> str:
    response = await client.post(
        "/api/plugins/renders", headers=user.bearer, json=submission(model=GEMINI_MODEL, prompt=f"SLOW_{seconds}")
    )
    render_id: str = response.json()["data"]["renderId"]

    async def processing() -> bool:
        data = (await client.get(f"/api/plugins/renders/{render_id}", headers=user.bearer)).json()["data"]
        return bool(data["status"] == "processing")

    await wait_until(processing, wait_seconds=30, interval=0.05)
    return render_id


@pytest.mark.parametrize(
    ("render_seconds", "finished_by"),
    [(2, "the terminated worker, within its grace"), (12, "another worker, after the first released it")],
)
async def test_worker_terminated_mid_render_loses_nothing_and_does_nothing_twice(
    client: httpx.AsyncClient, fragile_stack: Stack, broker: EmbeddedKafka, render_seconds: int, finished_by: str
) -> None:
    """SIGTERM: the worker stops fetching, finishes the render in hand if it can within SHUTDOWN_GRACE_SECONDS (5),
    else releases it; either way it exits, and the render completes once, charged once."""
    user = await sign_up(client)
    render_id = await start_slow_render(client, user, render_seconds)
    victim = render_worker(fragile_stack)
    victim.send_signal(signal.SIGTERM)
    victim.wait(30)  # gone within the grace (plus start-up of nothing): psutil raises TimeoutExpired otherwise
    final = await wait_final(client, render_id, user.bearer, wait_seconds=120)
    assert final["status"] == "completed", (finished_by, final)

    async def charged() -> bool:
        return (await balance(client, user.bearer))["totalSpent"] == 5

    try:
        await wait_until(charged, wait_seconds=60)  # the credits group may be rebalancing on a loaded machine
    except TimeoutError:
        raise AssertionError(await diagnosis(broker, fragile_stack, render_id)) from None
    types = await render_events(broker, render_id)
    assert types.count("render.processing") == 1, types
    assert types.count("render.completed") == 1, types
    assert "render.failed" not in types
    assert (await balance(client, user.bearer))["balance"] == 5


async def test_upload_over_the_limit_is_refused_without_cost(client: httpx.AsyncClient) -> None:
    user = await sign_up(client)
    big = os.urandom(2 * 1024 * 1024)
    response = await client.post(
        "/api/plugins/renders",
        headers=user.bearer,
        data={"uploadedImageType": "image/png"},
        files={"uploadedImageData": ("big.png", big, "image/png")},
    )
    assert response.status_code == 413, response.text
    assert response.json()["errorCode"] == "PAYLOAD_TOO_LARGE"
    assert (await balance(client, user.bearer))["balance"] == 10
