"""API keys and token responses, attacked from outside through the gateway (issue #13, part 3): secrets are never
cacheable, an account holds a bounded number of active keys (also under concurrent creation), ``GET /keys`` pages."""

import asyncio
import re
import uuid

import httpx

from shared.testing.fixtures import PluginUser, sign_up

KEYS = "/api/plugins/keys"
MAX_KEYS = 100  # auth's default AUTH_MAX_API_KEYS_PER_USER


def assert_no_store(response: httpx.Response) -> None:
    assert response.headers.get("cache-control") == "no-store", dict(response.headers)
    assert response.headers.get("pragma") == "no-cache"


async def create_key(client: httpx.AsyncClient, user: PluginUser, name: str = "k") -> httpx.Response:
    return await client.post(KEYS, headers=user.bearer, json={"name": name, "scopes": ["renders:read"]})


async def test_every_response_with_a_token_or_key_is_no_store(gateway_client: httpx.AsyncClient) -> None:
    email, password = f"nostore-{uuid.uuid4().hex[:8]}@example.com", "pw-" + uuid.uuid4().hex
    signup = await gateway_client.post("/api/plugins/auth/signup", json={"email": email, "password": password})
    assert signup.status_code == 201
    assert_no_store(signup)
    signin = await gateway_client.post("/api/plugins/auth/signin", json={"email": email, "password": password})
    assert signin.status_code == 200
    assert_no_store(signin)
    refresh = await gateway_client.post(
        "/api/plugins/auth/refresh", json={"refresh_token": signin.json()["refresh_token"]}
    )
    assert refresh.status_code == 200
    assert_no_store(refresh)
    bearer = {"Authorization": f"Bearer {refresh.json()['access_token']}"}
    created = await gateway_client.post(KEYS, headers=bearer, json={"name": "n", "scopes": ["renders:read"]})
    assert created.status_code == 201
    assert created.json()["data"]["key"].startswith("rk_live_")
    assert_no_store(created)


async def test_active_keys_are_capped_even_when_created_at_once(gateway_client: httpx.AsyncClient) -> None:
    user = await sign_up(gateway_client)
    for i in range(MAX_KEYS - 10):
        assert (await create_key(gateway_client, user, f"k{i}")).status_code == 201
    # Twenty at once for the last ten places: exactly ten get one.
    burst = await asyncio.gather(*(create_key(gateway_client, user, f"b{i}") for i in range(20)))
    assert sorted(r.status_code for r in burst) == [201] * 10 + [409] * 10
    refused = await create_key(gateway_client, user)
    assert refused.status_code == 409
    body = refused.json()
    assert (body["success"], body["errorCode"], body["details"]["limit"]) == (False, "INVALID_STATE", MAX_KEYS)
    assert "key" not in body.get("data", {})
    # A revoked key frees its place; other accounts are unaffected.
    some_id = next(r.json()["data"]["id"] for r in burst if r.status_code == 201)
    assert (await gateway_client.delete(f"{KEYS}/{some_id}", headers=user.bearer)).status_code == 200
    assert (await create_key(gateway_client, user)).status_code == 201
    assert (await create_key(gateway_client, user)).status_code == 409
    other = await sign_up(gateway_client)
    assert (await create_key(gateway_client, other)).status_code == 201

    # GET /keys pages newest first with an opaque cursor; `data` stays a list, `nextCursor` beside it.
    default = await gateway_client.get(KEYS, headers=user.bearer)
    assert default.status_code == 200
    assert len(default.json()["data"]) == 100
    assert default.json()["nextCursor"]
    seen: list[dict[str, object]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 30} | ({"cursor": cursor} if cursor else {})
        page = await gateway_client.get(KEYS, headers=user.bearer, params=params)
        assert page.status_code == 200, page.text
        assert isinstance(page.json()["data"], list)
        seen += page.json()["data"]
        cursor = page.json()["nextCursor"]
        pages += 1
        if cursor is None:
            break
    assert pages == 4
    assert len(seen) == MAX_KEYS + 1  # 100 active + the revoked one
    assert len({k["id"] for k in seen}) == len(seen)
    sequential = [int(str(k["name"])[1:]) for k in seen if re.fullmatch(r"k[0-9]+", str(k["name"]))]
    assert sequential == list(range(MAX_KEYS - 11, -1, -1)), "newest first"
    assert [k["isActive"] for k in seen].count(False) == 1
    assert all("key" not in k for k in seen)
    bad = await gateway_client.get(KEYS, headers=user.bearer, params={"cursor": "not-a-cursor!"})
    assert bad.status_code == 400
    assert (bad.json()["errorCode"], bad.json()["details"]["field"]) == ("INVALID_INPUT", "cursor")
    too_many = await gateway_client.get(KEYS, headers=user.bearer, params={"limit": 1000})
    assert too_many.status_code == 400
    # Another user's cursor shows nothing of this account.
    foreign = await gateway_client.get(KEYS, headers=other.bearer, params={"cursor": default.json()["nextCursor"]})
    assert foreign.status_code == 200
    assert {k["id"] for k in foreign.json()["data"]} <= {
        k["id"] for k in (await gateway_client.get(KEYS, headers=other.bearer)).json()["data"]
    }
