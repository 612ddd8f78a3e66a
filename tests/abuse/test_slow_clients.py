"""One hostile account against the gateway's public port: slow bodies, hoarded event streams, oversized bodies.

What must hold for everybody else: no error and no added second of latency while the attack runs; what the
attacker gets: 429 beyond its share of open requests and streams, 408 (and a closed connection) for a body that
does not arrive in time, 413 as soon as a body passes its cap, chunked or not.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from starlette.types import ASGIApp

from services.gateway.config import Settings as GatewaySettings
from services.renders.uploads import EXAMPLE_PNG_BASE64
from shared.http import MAX_BODY_BYTES, create_app
from shared.responses import JsonResponse
from shared.settings import ServiceSettings
from shared.testing.attacks import address_of, flood, request_head, trickle
from shared.testing.fixtures import PluginUser, Stack, run_cli, sign_up
from shared.testing.renders import submission
from shared.testing.servers import serve_in_thread

pytestmark = pytest.mark.timeout(240)

DEFAULTS = GatewaySettings(app_env="dev")  # the defaults the session stack runs with


def _bearer_head(method: str, path: str, user: PluginUser, **extra: str) -> bytes:
    return request_head(
        method, path, {"Authorization": f"Bearer {user.access_token}", "Content-Type": "application/json", **extra}
    )


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        yield http


async def _victim(client: httpx.AsyncClient, victim: PluginUser, stop: asyncio.Event) -> list[tuple[int, float]]:
    """A normal plugin user's traffic: reads, a key, a project, a render; (status, seconds) of each call."""
    seen: list[tuple[int, float]] = []
    calls = [
        ("GET", "/api/plugins/credits", None),
        ("GET", "/api/plugins/renders?limit=5", None),
        ("GET", "/api/plugins/auth/me", None),
        ("POST", "/api/plugins/projects", {"name": f"p-{uuid.uuid4().hex[:6]}"}),
        ("GET", "/api/plugins/keys", None),
        # Through the whole upload path every time; one Idempotency-Key, so one render (its processing is not
        # what this test is about).
        ("POST", "/api/plugins/renders", submission(uploadedImageData=EXAMPLE_PNG_BASE64)),
    ]
    index = 0
    while not stop.is_set():
        method, path, body = calls[index % len(calls)]
        index += 1
        started = time.perf_counter()
        headers = (
            {**victim.bearer, "Idempotency-Key": f"victim-{victim.user_id}"} if method == "POST" else victim.bearer
        )
        response = await client.request(method, path, json=body, headers=headers)
        seen.append((response.status_code, time.perf_counter() - started))
        await asyncio.sleep(0.05)
    return seen


async def test_a_slow_body_flood_from_one_account_costs_other_users_nothing(
    stack: Stack, client: httpx.AsyncClient, record_property: Callable[[str, object], None]
) -> None:
    attacker = await sign_up(client)
    victims = [await sign_up(client) for _ in range(4)]
    for victim in victims:  # enough credits for every render they submit during the attack
        assert run_cli(stack, "grant-credits", victim.email, "1000").returncode == 0
    address = address_of(stack.gateway_url)
    heads = [
        _bearer_head("POST", "/api/plugins/keys", attacker, **{"Transfer-Encoding": "chunked"}),
        _bearer_head("POST", "/api/plugins/renders", attacker, **{"Content-Length": str(1024 * 1024)}),
        _bearer_head("POST", "/api/plugins/projects", attacker, **{"Content-Length": "50000"}),
    ]
    stop = asyncio.Event()
    victim_tasks = [asyncio.create_task(_victim(client, v, stop)) for v in victims]
    await asyncio.sleep(1.0)  # the victims' baseline is part of the sample too
    attack = [
        asyncio.create_task(trickle(address, heads[i % len(heads)], chunked=i % len(heads) == 0)) for i in range(300)
    ]
    answers = await asyncio.gather(*attack)
    await asyncio.sleep(1.0)
    stop.set()
    samples = [sample for task in victim_tasks for sample in await task]

    statuses = Counter(answer.status for answer in answers)
    # The attacker holds its share and no more: the rest is refused at once, the held ones time out and are closed.
    assert set(statuses) <= {408, 429}, statuses
    assert statuses[429] >= 300 - DEFAULTS.max_requests_per_caller
    assert 0 < statuses[408] <= DEFAULTS.max_requests_per_caller
    assert all(answer.closed for answer in answers if answer.status == 408)
    assert all(b'"errorCode":"REQUEST_TIMEOUT"' in a.body for a in answers if a.status == 408)
    # Everybody else: every call answered as usual, none slowed down by a second.
    victim_statuses = Counter(status for status, _ in samples)
    assert set(victim_statuses) <= {200, 201, 202}, victim_statuses
    latencies = sorted(seconds for _, seconds in samples)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    record_property("victims_requests", len(latencies))
    record_property("victims_p50_ms", round(statistics.median(latencies) * 1000, 1))
    record_property("victims_p99_ms", round(p99 * 1000, 1))
    record_property("attacker_statuses", dict(statuses))
    assert len(latencies) >= 40
    assert p99 < 1.0
    health = await client.get("/api/plugins/health")
    assert health.json()["status"] == "healthy"
    # Operators see the attack: what the gateway refused to protect the others, by reason.
    metrics = (await client.get(stack.gateway_internal_url + "/metrics")).text
    refused = {
        line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("plugin_gateway_protective_refusals_total{")
    }
    assert refused["too many open requests"] >= statuses[429]
    assert refused["body too slow"] >= statuses[408]


async def test_event_streams_are_capped_per_caller_and_a_closed_one_frees_its_place(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    hoarder, other = await sign_up(client), await sign_up(client)
    accepted = await client.post("/api/plugins/renders", json=submission(), headers=hoarder.bearer)
    assert accepted.status_code == 202, accepted.text
    events = f"/api/plugins/renders/{accepted.json()['data']['renderId']}/events"
    address = address_of(stack.gateway_url)
    head = _bearer_head("GET", events, hoarder)
    # Streams of a finished render end at once; hold them open by never reading past the first bytes.
    opened: list[asyncio.StreamWriter] = []
    try:
        for _ in range(DEFAULTS.max_streams_per_caller):
            reader, writer = await asyncio.open_connection(*address)
            opened.append(writer)
            writer.write(head)
            await writer.drain()
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)).startswith(b"HTTP/1.1 200")
        over = await client.get(events, headers=hoarder.bearer)
        assert over.status_code == 429, over.text
        assert over.json()["errorCode"] == "RATE_LIMIT_EXCEEDED"
        assert int(over.headers["Retry-After"]) >= 1
        # Plain requests of the same caller are not streams: they still pass.
        assert (await client.get("/api/plugins/credits", headers=hoarder.bearer)).status_code == 200
        # Another caller is not affected.
        other_render = await client.post("/api/plugins/renders", json=submission(), headers=other.bearer)
        other_events = f"/api/plugins/renders/{other_render.json()['data']['renderId']}/events"
        async with client.stream("GET", other_events, headers=other.bearer) as response:
            assert response.status_code == 200
    finally:
        for writer in opened:
            writer.close()
    # Closed streams give their places back.
    deadline = time.monotonic() + 10
    while (status := (await client.get(events, headers=hoarder.bearer)).status_code) == 429:
        assert time.monotonic() < deadline, "closed streams kept their places"
        await asyncio.sleep(0.2)
    assert status == 200


async def _json_routes(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """Every public operation that takes a JSON body, from the served OpenAPI document."""
    spec = (await client.get("/api/plugins/openapi.json")).json()
    routes = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            content = (operation.get("requestBody") or {}).get("content", {})
            if "application/json" in content:
                concrete = path.replace("{", "x").replace("}", "")
                routes.append((method.upper(), concrete))
    assert ("POST", "/api/plugins/keys") in routes
    return routes


async def test_chunked_oversize_bodies_are_refused_at_the_cap_on_every_json_route_and_renders(
    stack: Stack, client: httpx.AsyncClient, user: PluginUser
) -> None:
    address = address_of(stack.gateway_url)
    routes = await _json_routes(client)
    for method, path in routes:
        if (method, path) == ("POST", "/api/plugins/renders"):
            continue  # its own, larger cap: below
        head = _bearer_head(method, path, user, **{"Transfer-Encoding": "chunked"})
        answer, sent = await flood(address, 64 * 1024 * 1024, head, chunked=True)
        assert answer.status == 413, (method, path, answer)
        assert b'"errorCode":"PAYLOAD_TOO_LARGE"' in answer.body
        # Refused as the cap passed, not after the 64 MiB arrived: nothing held the whole body.
        assert sent < 16 * 1024 * 1024, (method, path, sent)
    head = _bearer_head("POST", "/api/plugins/renders", user, **{"Transfer-Encoding": "chunked"})
    answer, sent = await flood(address, DEFAULTS.max_render_body_bytes + 4 * 1024 * 1024, head, chunked=True)
    assert answer.status == 413
    assert b"PAYLOAD_TOO_LARGE" in answer.body
    assert answer.closed
    # The caller's account was not touched by any of it.
    keys = await client.get("/api/plugins/keys", headers=user.bearer)
    assert keys.json()["data"] == []


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("auth", "/api/plugins/auth/signin"),
        ("credits", "/internal/credits/u-1/grants"),
        ("webhooks", "/api/plugins/webhooks/register"),
    ],
)
async def test_every_service_counts_the_bytes_of_a_chunked_body_itself(stack: Stack, service: str, path: str) -> None:
    """Behind the gateway too: a service reached with a chunked body over its cap answers 413 at the cap."""
    head = request_head("POST", path, {"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
    answer, sent = await flood(address_of(stack.service_urls[service]), 32 * 1024 * 1024, head, chunked=True)
    assert answer.status == 413, answer
    assert b'"errorCode":"PAYLOAD_TOO_LARGE"' in answer.body
    assert sent < MAX_BODY_BYTES + 8 * 1024 * 1024


def _body_app() -> ASGIApp:
    """A service built by the one app factory, with a route that reads its body whole and one with its own cap."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.body_limits = {("POST", "/big"): 3 * MAX_BODY_BYTES}
        yield

    async def ready() -> dict[str, str]:
        return {}

    router = APIRouter()

    @router.post("/echo-size")
    async def echo_size(request: Request) -> JsonResponse:
        return JsonResponse({"size": len(await request.body())})

    @router.post("/big")
    async def big(request: Request) -> JsonResponse:
        return JsonResponse({"size": len(await request.body())})

    return create_app(
        "body-test", settings=ServiceSettings(app_env="dev"), lifespan=lifespan, readiness=ready, routers=[router]
    )


@pytest.mark.parametrize("chunked", [True, False])
async def test_the_app_factory_caps_every_body_as_it_arrives(chunked: bool) -> None:
    with serve_in_thread(_body_app()) as url:
        address = address_of(url)
        framing = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(MAX_BODY_BYTES + 1)}
        head = request_head("POST", "/echo-size", framing)
        if chunked:
            answer, sent = await flood(address, 16 * MAX_BODY_BYTES, head, chunked=True)
            assert sent < 8 * MAX_BODY_BYTES
        else:  # declared over the cap: refused before a byte is read
            answer, sent = await flood(address, 0, head, chunked=False)
        assert answer.status == 413
        assert b"PAYLOAD_TOO_LARGE" in answer.body
        async with httpx.AsyncClient(base_url=url) as http:
            small = await http.post("/echo-size", content=b"x" * 1000)
            assert small.json() == {"size": 1000}
            own_cap = await http.post("/big", content=b"x" * (2 * MAX_BODY_BYTES))
            assert own_cap.json() == {"size": 2 * MAX_BODY_BYTES}
            over_own_cap = await http.post("/big", content=b"x" * (3 * MAX_BODY_BYTES + 1))
            assert over_own_cap.status_code == 413
