"""Credits service over real HTTP, a real PostgreSQL and a real Kafka-protocol broker.

One app per module on a database of this module alone, with a consumer group of its own on ``render.events`` (so it
never shares partitions with another process on the session's broker); tests stay apart by unique user, render and
reference ids.
"""

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.credits.config import Settings
from services.credits.main import create_app
from services.credits.models import SCHEMA
from shared.db import make_engine
from shared.events.contracts import RenderEventV1
from shared.events.envelope import CloudEvent
from shared.events.topics import RENDER_EVENTS
from shared.identity import IDENTITY_HEADER, Identity, sign_identity
from shared.testing import identity
from shared.testing.fixtures import migrated_database
from shared.testing.kafka import wait_until
from shared.testing.servers import serve_in_thread

CALLER_OF = {"grants": "auth", "reservations": "renders"}
"""Who calls which internal route in the platform (auth grants at signup, renders reserves at create)."""


def signed(caller: dict[str, Any] | None) -> dict[str, str]:
    """Headers for a parametrized caller: none, a service's own credential, a gateway identity signed with a key
    that is not the gateway's, or a valid one signed now."""
    if caller is None:
        return {}
    fields = dict(caller)
    if fields.get("auth_method") == "service":
        return identity.service_headers(fields["service"], "credits")
    if fields.pop("forged", False):
        return {IDENTITY_HEADER: sign_identity(Identity(**fields), Ed25519PrivateKey.generate())}
    return identity.gateway_headers(**fields)


def service_headers(caller: str = "auth") -> dict[str, str]:
    """Signed per call: credentials live 60 s, longer than this module runs."""
    return identity.service_headers(caller, "credits")


def user_headers(user_id: str) -> dict[str, str]:
    return identity.gateway_headers(auth_method="bearer", user_id=user_id, scopes=["renders:read"])


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def credits_database_url(postgres_server_url: str) -> Iterator[str]:
    with migrated_database(postgres_server_url) as url:
        yield url


@pytest.fixture(scope="module")
def credits_url(credits_database_url: str, kafka_bootstrap: str) -> Iterator[str]:
    settings = Settings(
        app_env="dev",
        database_url=credits_database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        consumer_group=new_id("credits-test"),
    )
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture
async def client(credits_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=credits_url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
async def db(credits_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(credits_database_url, schema=SCHEMA)
    yield engine
    await engine.dispose()


async def grant(client: httpx.AsyncClient, user: str, credits: int, reference: str | None = None) -> httpx.Response:
    body = {"credits": credits, "reference": reference or new_id("grant"), "reason": "test grant"}
    return await client.post(f"/internal/credits/{user}/grants", json=body, headers=service_headers())


async def reserve(client: httpx.AsyncClient, user: str, render_id: str, credits: int) -> httpx.Response:
    body = {"renderId": render_id, "credits": credits}
    return await client.post(f"/internal/credits/{user}/reservations", json=body, headers=service_headers("renders"))


async def figures(client: httpx.AsyncClient, user: str) -> dict[str, int]:
    response = await client.get(f"/internal/credits/{user}", headers=service_headers())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    return dict(body["data"])


async def ledger_rows(db: AsyncEngine, reference: str) -> list[tuple[str, int, int]]:
    async with db.connect() as conn:
        rows = await conn.execute(
            text("SELECT kind, credits, amount FROM ledger WHERE reference = :r ORDER BY id"), {"r": reference}
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def test_grant_is_idempotent_by_reference(client: httpx.AsyncClient, db: AsyncEngine) -> None:
    user = new_id("user")
    signup = f"signup:{user}"
    first = await grant(client, user, 10, signup)
    assert first.status_code == 201, first.text
    assert first.json() == {
        "success": True,
        "data": {"balance": 10, "totalEarned": 10, "totalSpent": 0, "monthlyEarned": 10, "monthlySpent": 0},
    }
    again = await grant(client, user, 10, signup)
    assert again.status_code == 201
    assert again.json()["data"]["balance"] == 10
    assert (await grant(client, user, 5, "bonus:1")).json()["data"]["balance"] == 15
    conflict = await grant(client, user, 99, signup)
    assert conflict.status_code == 409
    assert conflict.json()["errorCode"] == "IDEMPOTENCY_CONFLICT"
    assert (await figures(client, user))["balance"] == 15
    assert await ledger_rows(db, signup) == [("grant", 10, 10)]


async def test_reserve_refuses_a_short_balance_with_the_contract_body(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    user = new_id("user")
    await grant(client, user, 5)
    short = await reserve(client, user, new_id("render"), 10)
    assert short.status_code == 402
    body = short.json()
    assert body["success"] is False
    assert body["errorCode"] == "INSUFFICIENT_CREDITS"
    assert body["requiredCredits"] == 10
    assert body["availableCredits"] == 5
    assert isinstance(body["error"], str)
    assert body["error"]

    unknown = await reserve(client, new_id("nobody"), new_id("render"), 1)
    assert unknown.status_code == 402
    assert (unknown.json()["requiredCredits"], unknown.json()["availableCredits"]) == (1, 0)

    render_id = new_id("render")
    ok = await reserve(client, user, render_id, 5)
    assert ok.status_code == 201, ok.text
    assert ok.json() == {"success": True, "data": {"renderId": render_id, "credits": 5, "balance": 0}}
    repeat = await reserve(client, user, render_id, 5)
    assert repeat.status_code == 201, "a repeated reservation answers like the first, charged once"
    assert repeat.json()["data"] == {"renderId": render_id, "credits": 5, "balance": 0}
    assert (await reserve(client, user, render_id, 3)).json()["errorCode"] == "IDEMPOTENCY_CONFLICT"
    assert await ledger_rows(db, render_id) == [("reserve", 5, -5)]
    assert await figures(client, user) == {
        "balance": 0,
        "totalEarned": 5,
        "totalSpent": 0,
        "monthlyEarned": 5,
        "monthlySpent": 0,
    }


async def test_concurrent_reservations_never_double_spend(client: httpx.AsyncClient, db: AsyncEngine) -> None:
    user = new_id("user")
    await grant(client, user, 20)
    render_ids = [new_id("render") for _ in range(20)]
    responses = await asyncio.gather(*(reserve(client, user, r, 10) for r in render_ids))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 2 + [402] * 18
    assert all(r.json()["errorCode"] == "INSUFFICIENT_CREDITS" for r in responses if r.status_code == 402)
    assert (await figures(client, user))["balance"] == 0
    async with db.connect() as conn:
        reserved = await conn.execute(
            text("SELECT count(*) FROM ledger WHERE user_id = :u AND kind = 'reserve'"), {"u": user}
        )
        assert reserved.scalar_one() == 2

    # The same render id requested concurrently (a client retrying): one reservation, every answer a success.
    rich = new_id("user")
    await grant(client, rich, 100)
    same = new_id("render")
    repeated = await asyncio.gather(*(reserve(client, rich, same, 10) for _ in range(10)))
    assert [r.status_code for r in repeated] == [201] * 10
    assert (await figures(client, rich))["balance"] == 90
    assert await ledger_rows(db, same) == [("reserve", 10, -10)]


def render_event(event_type: str, render_id: str, user: str) -> CloudEvent:
    status = event_type.removeprefix("render.")
    data = RenderEventV1(renderId=render_id, userId=user, status=status, quality="high", creditsCost=10)
    return CloudEvent(
        source="/services/renders",
        type=event_type,
        subject=render_id,
        data=data.model_dump(mode="json", exclude_none=True),
    )


async def publish(bootstrap: str, *events: CloudEvent) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                RENDER_EVENTS, event.kafka_value(), key=event.kafka_key(), headers=event.kafka_headers()
            )
    finally:
        await producer.stop()


async def processed_ids(db: AsyncEngine) -> set[str]:
    async with db.connect() as conn:
        return set((await conn.execute(text("SELECT event_id FROM processed_events"))).scalars())


async def test_render_events_capture_or_release_each_reservation_once(
    client: httpx.AsyncClient, db: AsyncEngine, kafka_bootstrap: str
) -> None:
    user = new_id("user")
    await grant(client, user, 30)
    completed, failed, canceled = new_id("render"), new_id("render"), new_id("render")
    for render_id in (completed, failed, canceled):
        assert (await reserve(client, user, render_id, 10)).status_code == 201
    assert (await figures(client, user))["balance"] == 0

    done = render_event("render.completed", completed, user)
    fail = render_event("render.failed", failed, user)
    cancel = render_event("render.canceled", canceled, user)
    progress = render_event("render.processing", completed, user)
    # The last event on each key (so on the same partition, consumed after the ones before it) is a sentinel that
    # must itself change nothing: a release after a capture, a capture after a release, a second cancel.
    sentinels = [
        render_event("render.failed", completed, user),
        render_event("render.completed", failed, user),
        render_event("render.canceled", canceled, user),
    ]
    no_reservation = render_event("render.completed", new_id("render"), user)
    await publish(kafka_bootstrap, progress, done, done, fail, fail, cancel, cancel, no_reservation, *sentinels)
    expected = {done.id, fail.id, cancel.id, no_reservation.id, *(s.id for s in sentinels)}

    async def all_consumed() -> bool:
        return expected <= await processed_ids(db)

    await wait_until(all_consumed, wait_seconds=60)
    # Equality within this test's events: the topic may also carry the session stack's render events.
    mine = {e.id for e in (progress, done, fail, cancel, no_reservation, *sentinels)}
    assert await processed_ids(db) & mine == expected, "render.processing is not a type credits consumes"
    assert await ledger_rows(db, completed) == [("reserve", 10, -10), ("capture", 10, 0)]
    assert await ledger_rows(db, failed) == [("reserve", 10, -10), ("release", 10, 10)]
    assert await ledger_rows(db, canceled) == [("reserve", 10, -10), ("release", 10, 10)]
    assert await ledger_rows(db, no_reservation.subject) == []
    # A release is neither earned nor spent: only the capture is spent, only the grant earned.
    assert await figures(client, user) == {
        "balance": 20,
        "totalEarned": 30,
        "totalSpent": 10,
        "monthlyEarned": 30,
        "monthlySpent": 10,
    }


async def test_monthly_figures_count_the_current_utc_month_only(client: httpx.AsyncClient, db: AsyncEngine) -> None:
    user = new_id("user")
    old = new_id("old-grant")
    await grant(client, user, 40, old)
    await grant(client, user, 7)
    async with db.begin() as conn:
        await conn.execute(
            text(
                "UPDATE ledger SET created_at = date_trunc('month', now(), 'UTC') - interval '1 second' "
                "WHERE reference = :r"
            ),
            {"r": old},
        )
    data = await figures(client, user)
    assert data == {"balance": 47, "totalEarned": 47, "totalSpent": 0, "monthlyEarned": 7, "monthlySpent": 0}
    unknown = await client.get("/api/plugins/credits", headers=user_headers(new_id("nobody")))
    assert unknown.status_code == 200
    assert unknown.json()["data"] == {
        "balance": 0,
        "totalEarned": 0,
        "totalSpent": 0,
        "monthlyEarned": 0,
        "monthlySpent": 0,
    }


async def test_public_routes_answer_the_callers_own_figures(client: httpx.AsyncClient) -> None:
    user, other = new_id("user"), new_id("user")
    await grant(client, user, 12)
    await grant(client, other, 99)
    response = await client.get("/api/plugins/credits", headers=user_headers(user))
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "data": {"balance": 12, "totalEarned": 12, "totalSpent": 0, "monthlyEarned": 12, "monthlySpent": 0},
    }


async def test_transactions_paginate_newest_first(client: httpx.AsyncClient) -> None:
    user = new_id("user")
    for n in range(1, 8):
        assert (await grant(client, user, n, f"{user}-grant-{n}")).status_code == 201
    await grant(client, new_id("someone-else"), 50)
    render_id = new_id("render")
    await reserve(client, user, render_id, 3)

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/api/plugins/credits/transactions", params=params, headers=user_headers(user))
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        pages += 1
        seen.extend(data["transactions"])
        cursor = data["nextCursor"]
        if cursor is None:
            break
        assert len(data["transactions"]) == 3
    assert pages == 3
    assert len(seen) == 8
    ids = [int(t["id"]) for t in seen]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 8
    assert seen[0] == {
        "id": seen[0]["id"],
        "kind": "reserve",
        "credits": 3,
        "amount": -3,
        "reference": render_id,
        "reason": "Render reserved",
        "createdAt": seen[0]["createdAt"],
    }
    assert [t["reference"] for t in seen[1:]] == [f"{user}-grant-{n}" for n in range(7, 0, -1)]
    assert all(t["kind"] == "grant" and t["amount"] == t["credits"] for t in seen[1:])

    default = await client.get("/api/plugins/credits/transactions", headers=user_headers(user))
    assert len(default.json()["data"]["transactions"]) == 8
    assert default.json()["data"]["nextCursor"] is None


@pytest.mark.parametrize(
    "cursor",
    ["%%%", "abc", "djE6", base64.urlsafe_b64encode(b"v1:x").decode(), base64.urlsafe_b64encode(b"7").decode()],
)
async def test_malformed_cursor_is_invalid_input(client: httpx.AsyncClient, cursor: str) -> None:
    response = await client.get(
        "/api/plugins/credits/transactions", params={"cursor": cursor}, headers=user_headers(new_id("user"))
    )
    assert response.status_code == 400
    body = response.json()
    assert body["errorCode"] == "INVALID_INPUT"
    assert body["details"]["field"] == "cursor"


@pytest.mark.parametrize("limit", ["0", "101", "ten"])
async def test_out_of_range_limit_is_invalid_input(client: httpx.AsyncClient, limit: str) -> None:
    response = await client.get(
        "/api/plugins/credits/transactions", params={"limit": limit}, headers=user_headers(new_id("user"))
    )
    assert response.status_code == 400
    assert response.json()["errorCode"] == "INVALID_INPUT"
    assert response.json()["details"]["field"] == "limit"


@pytest.mark.parametrize(
    "caller",
    [
        None,
        {"auth_method": "service", "service": "renders"},
        {"auth_method": "bearer"},
        {"auth_method": "bearer", "user_id": "u", "forged": True},
    ],
    ids=["no-identity", "service-without-user", "bearer-without-user", "forged"],
)
@pytest.mark.parametrize("path", ["/api/plugins/credits", "/api/plugins/credits/transactions"])
async def test_public_routes_require_a_user(
    client: httpx.AsyncClient, path: str, caller: dict[str, Any] | None
) -> None:
    response = await client.get(path, headers=signed(caller))
    assert response.status_code == 401
    assert response.json()["errorCode"] == "AUTH_REQUIRED"
    assert response.json()["success"] is False


@pytest.mark.parametrize(
    "caller",
    [
        None,
        {"auth_method": "bearer", "user_id": "u1"},
        {"auth_method": "api_key", "user_id": "u1", "key_id": "k1", "scopes": ["renders:create"]},
    ],
    ids=["no-identity", "bearer", "api-key"],
)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/internal/credits/u1/grants", {"credits": 5, "reference": "r", "reason": "x"}),
        ("POST", "/internal/credits/u1/reservations", {"renderId": "r1", "credits": 5}),
        ("GET", "/internal/credits/u1", None),
    ],
)
async def test_internal_routes_refuse_user_identities(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None, caller: dict[str, Any] | None
) -> None:
    response = await client.request(method, path, json=body, headers=signed(caller))
    assert response.status_code == 401
    assert response.json()["errorCode"] == "AUTH_REQUIRED"
    assert (await figures(client, "u1"))["balance"] == 0, "nothing was granted or reserved"


GRANT = {"credits": 5, "reference": "welcome-ref", "reason": "welcome"}


@pytest.mark.parametrize(
    ("path", "body", "code", "field"),
    [
        ("grants", GRANT | {"credits": -5}, "INVALID_INPUT", "credits"),
        ("grants", GRANT | {"credits": 0}, "INVALID_INPUT", "credits"),
        ("grants", GRANT | {"credits": 1_000_001}, "INVALID_INPUT", "credits"),
        ("grants", GRANT | {"credits": "ten"}, "INVALID_INPUT", "credits"),
        ("grants", GRANT | {"credits": "5"}, "INVALID_INPUT", "credits"),
        ("grants", GRANT | {"credits": 2.5}, "INVALID_INPUT", "credits"),
        ("grants", GRANT | {"credits": True}, "INVALID_INPUT", "credits"),
        ("grants", GRANT | {"reference": ""}, "INVALID_INPUT", "reference"),
        ("grants", GRANT | {"reference": "   "}, "INVALID_INPUT", "reference"),
        ("grants", GRANT | {"reference": "r" * 201}, "INVALID_INPUT", "reference"),
        ("grants", GRANT | {"reference": 7}, "INVALID_INPUT", "reference"),
        ("grants", {"credits": 5, "reason": "x"}, "MISSING_REQUIRED_FIELD", "reference"),
        ("grants", {"reference": "r", "reason": "x"}, "MISSING_REQUIRED_FIELD", "credits"),
        ("grants", {"credits": 5, "reference": "r"}, "MISSING_REQUIRED_FIELD", "reason"),
        ("reservations", {"credits": 5}, "MISSING_REQUIRED_FIELD", "renderId"),
        ("reservations", {"renderId": "r1"}, "MISSING_REQUIRED_FIELD", "credits"),
        ("reservations", {"renderId": "r1", "credits": -1}, "INVALID_INPUT", "credits"),
        ("reservations", {"renderId": ["r1"], "credits": 1}, "INVALID_INPUT", "renderId"),
    ],
)
async def test_bad_input_is_refused_with_the_contract_code(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], code: str, field: str
) -> None:
    user = new_id("user")
    await grant(client, user, 100)
    headers = service_headers(CALLER_OF[path])
    response = await client.post(f"/internal/credits/{user}/{path}", json=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["errorCode"] == code
    assert response.json()["details"]["field"] == field
    assert (await figures(client, user))["balance"] == 100


async def test_malformed_json_is_invalid_input(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/internal/credits/u1/grants",
        content=b"{not json",
        headers=service_headers() | {"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["errorCode"] == "INVALID_INPUT"
