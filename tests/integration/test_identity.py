"""Identity through the real gateway and auth service: happy paths, the attack matrix, revocation, rate limits."""

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from services.gateway.main import create_app as create_gateway
from services.gateway.main import create_listeners
from shared import apikeys
from shared.identity import Identity
from shared.testing.fixtures import PluginUser, Stack, gateway_settings, run_cli, sign_up
from shared.testing.identity import gateway_token
from shared.testing.kafka import wait_until
from shared.testing.servers import serve_in_thread

ALL_SCOPES = list(apikeys.SCOPES)
# Every secret this module handles; the last test asserts none of them reached any log line.
SEEN_SECRETS: set[str] = set()


def remember(*values: str) -> None:
    SEEN_SECRETS.update(v for v in values if v)


@pytest.fixture
async def client(gateway_client: httpx.AsyncClient) -> httpx.AsyncClient:
    return gateway_client


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> PluginUser:
    user = await sign_up(client)
    remember(user.password, user.access_token, user.refresh_token)
    return user


async def create_key(
    client: httpx.AsyncClient, user: PluginUser, scopes: list[str] | None = None, **extra: object
) -> dict[str, object]:
    response = await client.post(
        "/api/plugins/keys", headers=user.bearer, json={"name": "sketchup", "scopes": scopes or ALL_SCOPES, **extra}
    )
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()["data"]
    remember(str(data["key"]))
    return data


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body: dict[str, object] = response.json()
    assert body["success"] is False
    assert body["errorCode"] == code, body
    assert "Traceback" not in response.text
    return body


# --- happy paths -------------------------------------------------------------------------------------------------
async def test_signup_returns_tokens_user_and_signup_credits(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/plugins/auth/signup", json={"email": "New.User@Example.COM", "password": "s3cret-pass", "name": "Ann"}
    )
    assert response.status_code == 201
    body = response.json()
    remember(body["access_token"], body["refresh_token"], "s3cret-pass")
    assert body["success"] is True
    assert body["token_type"] == "Bearer"
    assert datetime.fromisoformat(body["expires_at"]) > datetime.now(UTC) + timedelta(minutes=59)
    user = body["user"]
    assert user["email"] == "new.user@example.com"
    assert user["name"] == "Ann"
    assert user["credits"]["balance"] == 10
    assert user["credits"]["totalEarned"] == 10
    assert {"id", "created_at"} <= set(user)
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user["id"]
    assert {"iss", "aud", "iat", "exp", "sub"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "EdDSA"
    again = await client.post("/api/plugins/auth/signup", json={"email": "new.user@EXAMPLE.com", "password": "x" * 9})
    assert_error(again, 409, "ALREADY_EXISTS")


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"email": "a@example.com", "password": "short"}, 400, "INVALID_INPUT", "password"),
        ({"email": "not-an-email", "password": "long-enough"}, 400, "INVALID_INPUT", "email"),
        ({"password": "long-enough"}, 400, "MISSING_REQUIRED_FIELD", "email"),
        ({"email": "a@example.com"}, 400, "MISSING_REQUIRED_FIELD", "password"),
        ({"email": "a@example.com", "password": 12345678}, 400, "INVALID_INPUT", "password"),
        ({"email": "a@example.com", "password": "p" * 2000}, 400, "INVALID_INPUT", "password"),
    ],
)
async def test_signup_refuses_bad_input(
    client: httpx.AsyncClient, body: dict[str, object], status: int, code: str, field: str
) -> None:
    error = assert_error(await client.post("/api/plugins/auth/signup", json=body), status, code)
    assert error["details"]["field"] == field  # type: ignore[index]


async def test_malformed_json_and_wrong_content(client: httpx.AsyncClient) -> None:
    bad = await client.post("/api/plugins/auth/signin", content=b"{nope", headers={"content-type": "application/json"})
    assert_error(bad, 400, "INVALID_INPUT")
    assert_error(await client.post("/api/plugins/auth/signin", json=["a"]), 400, "INVALID_INPUT")


async def test_signin_and_me(client: httpx.AsyncClient, alice: PluginUser) -> None:
    response = await client.post(
        "/api/plugins/auth/signin", json={"email": alice.email.upper(), "password": alice.password}
    )
    assert response.status_code == 200
    body = response.json()
    remember(body["access_token"], body["refresh_token"])
    assert body["user"]["id"] == alice.user_id
    me = await client.get("/api/plugins/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["success"] is True
    assert me.json()["user"]["email"] == alice.email
    assert me.json()["user"]["credits"]["balance"] == 10


async def test_signin_refusals_look_the_same(client: httpx.AsyncClient, alice: PluginUser) -> None:
    wrong = await client.post("/api/plugins/auth/signin", json={"email": alice.email, "password": "wrong-password"})
    unknown = await client.post(
        "/api/plugins/auth/signin", json={"email": "nobody-xyz@example.com", "password": "wrong-password"}
    )
    assert (
        assert_error(wrong, 401, "INVALID_CREDENTIALS")["error"]
        == assert_error(unknown, 401, "INVALID_CREDENTIALS")["error"]
    )


async def test_refresh_rotates_and_reuse_revokes_the_family(client: httpx.AsyncClient, alice: PluginUser) -> None:
    first = await client.post("/api/plugins/auth/refresh", json={"refresh_token": alice.refresh_token})
    assert first.status_code == 200
    pair = first.json()
    remember(pair["access_token"], pair["refresh_token"])
    assert set(pair) == {"success", "access_token", "refresh_token", "expires_at", "token_type"}
    assert pair["refresh_token"] != alice.refresh_token
    # The spent token again: refused, and its whole family (including the newest token) is revoked.
    assert_error(
        await client.post("/api/plugins/auth/refresh", json={"refresh_token": alice.refresh_token}),
        401,
        "REFRESH_FAILED",
    )
    assert_error(
        await client.post("/api/plugins/auth/refresh", json={"refresh_token": pair["refresh_token"]}),
        401,
        "REFRESH_FAILED",
    )
    # Another sign-in is another family, unaffected.
    other = await client.post("/api/plugins/auth/signin", json={"email": alice.email, "password": alice.password})
    remember(other.json()["refresh_token"], other.json()["access_token"])
    refreshed = await client.post("/api/plugins/auth/refresh", json={"refresh_token": other.json()["refresh_token"]})
    assert refreshed.status_code == 200
    remember(refreshed.json()["refresh_token"], refreshed.json()["access_token"])


async def test_signout_revokes_the_family(client: httpx.AsyncClient, alice: PluginUser) -> None:
    out = await client.post("/api/plugins/auth/signout", json={"refresh_token": alice.refresh_token})
    assert out.status_code == 200
    assert out.json() == {"success": True}
    assert_error(
        await client.post("/api/plugins/auth/refresh", json={"refresh_token": alice.refresh_token}),
        401,
        "REFRESH_FAILED",
    )
    assert_error(
        await client.post("/api/plugins/auth/refresh", json={"refresh_token": "rt_unknown"}), 401, "REFRESH_FAILED"
    )


async def test_jwks_at_gateway_root(client: httpx.AsyncClient, alice: PluginUser) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys
    kid = jwt.get_unverified_header(alice.access_token)["kid"]
    assert kid in {k["kid"] for k in keys}
    for key in keys:
        assert key["kty"] == "OKP"
        assert key["alg"] == "EdDSA"
        assert "d" not in key, "private part published"


async def test_api_key_lifecycle(client: httpx.AsyncClient, alice: PluginUser) -> None:
    created = await create_key(client, alice, ["renders:read", "projects:read"], expiresAt=None)
    key = str(created["key"])
    assert apikeys.is_well_formed(key)
    assert key.startswith(str(created["keyPrefix"]))
    assert created["scopes"] == ["renders:read", "projects:read"]
    listed = (await client.get("/api/plugins/keys", headers=alice.bearer)).json()["data"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0]
    assert listed[0]["isActive"] is True
    assert set(listed[0]) == {"id", "name", "keyPrefix", "scopes", "expiresAt", "lastUsedAt", "isActive", "createdAt"}
    me = await client.get("/api/plugins/auth/me", headers={"X-Api-Key": key})
    assert me.status_code == 200
    assert me.json()["user"]["id"] == alice.user_id

    async def last_used_recorded() -> bool:
        keys = (await client.get("/api/plugins/keys", headers=alice.bearer)).json()["data"]
        return keys[0]["lastUsedAt"] is not None

    await wait_until(last_used_recorded, wait_seconds=20, interval=0.5)
    deleted = await client.delete(f"/api/plugins/keys/{created['id']}", headers=alice.bearer)
    assert deleted.status_code == 200
    assert deleted.json()["success"] is True
    assert deleted.json()["message"]
    listed = (await client.get("/api/plugins/keys", headers=alice.bearer)).json()["data"]
    assert listed[0]["isActive"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "k", "scopes": ["renders:read", "admin:all"]}, "scopes"),
        ({"name": "k", "scopes": []}, "scopes"),
        ({"name": "", "scopes": ["renders:read"]}, "name"),
        ({"name": "k", "scopes": ["renders:read"], "expiresAt": "2020-01-01T00:00:00Z"}, "expiresAt"),
        ({"name": "k", "scopes": ["renders:read"], "expiresAt": "tomorrow"}, "expiresAt"),
    ],
)
async def test_create_key_refuses_bad_input(
    client: httpx.AsyncClient, alice: PluginUser, body: dict[str, object], field: str
) -> None:
    error = assert_error(await client.post("/api/plugins/keys", headers=alice.bearer, json=body), 400, "INVALID_INPUT")
    assert str(error["details"]["field"]).startswith(field)  # type: ignore[index]


# --- attack matrix -----------------------------------------------------------------------------------------------
def signing_key(stack: Stack) -> object:
    pem = sorted((stack.var_dir / "keys").glob("*.pem"))[-1].read_bytes()
    return serialization.load_pem_private_key(pem, password=None)


def forge(stack: Stack, user: PluginUser, **changes: object) -> str:
    claims = jwt.decode(user.access_token, options={"verify_signature": False})
    claims.update(changes)
    kid = jwt.get_unverified_header(user.access_token)["kid"]
    return jwt.encode(claims, signing_key(stack), algorithm="EdDSA", headers={"kid": kid})  # type: ignore[arg-type]


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_token_attacks(client: httpx.AsyncClient, stack: Stack, alice: PluginUser) -> None:
    header, payload, signature = alice.access_token.split(".")
    kid = jwt.get_unverified_header(alice.access_token)["kid"]
    claims = jwt.decode(alice.access_token, options={"verify_signature": False})
    public_jwk = next(k for k in (await client.get("/.well-known/jwks.json")).json()["keys"] if k["kid"] == kid)
    now = int(time.time())
    cases = {
        "tampered signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "tampered payload": f"{header}.{b64({**claims, 'sub': 'someone-else'})}.{signature}",
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{payload}.",
        "hs256 with public key": jwt.encode(claims, public_jwk["x"], algorithm="HS256", headers={"kid": kid}),
        "unknown kid": jwt.encode(claims, signing_key(stack), algorithm="EdDSA", headers={"kid": "nope"}),  # type: ignore[arg-type]
        "wrong iss": forge(stack, alice, iss="https://evil.example"),
        "wrong aud": forge(stack, alice, aud="another-api"),
        "nbf in the future": forge(stack, alice, nbf=now + 600),
        "no sub": forge(stack, alice, sub=None),
        "garbage": "not.a.jwt",
    }
    for name, token in cases.items():
        response = await client.get("/api/plugins/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert response.json()["errorCode"] == "INVALID_TOKEN", name
    expired = forge(stack, alice, iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    response = await client.get("/api/plugins/auth/me", headers={"Authorization": f"Bearer {expired}"})
    assert_error(response, 401, "TOKEN_EXPIRED")
    for header_value in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer x y", "Token abc"):
        assert_error(
            await client.get("/api/plugins/auth/me", headers={"Authorization": header_value}), 401, "INVALID_TOKEN"
        )


async def test_authorization_header_alone_decides(client: httpx.AsyncClient, alice: PluginUser) -> None:
    key = str((await create_key(client, alice))["key"])
    response = await client.get(
        "/api/plugins/auth/me", headers={"Authorization": "Bearer not-a-token", "X-Api-Key": key}
    )
    assert_error(response, 401, "INVALID_TOKEN")
    assert_error(await client.get("/api/plugins/auth/me"), 401, "AUTH_REQUIRED")


async def test_api_key_attacks(client: httpx.AsyncClient, alice: PluginUser) -> None:
    key = str((await create_key(client, alice))["key"])
    corrupted = key[:-1] + ("A" if key[-1] != "A" else "B")
    unknown = apikeys.generate()
    for bad in (corrupted, unknown, "rk_live_short", "", "x" * 5000):
        assert_error(await client.get("/api/plugins/auth/me", headers={"X-Api-Key": bad}), 401, "INVALID_API_KEY")
    # A key manages no keys, whatever its scopes.
    for method, path in (
        ("GET", "/api/plugins/keys"),
        ("POST", "/api/plugins/keys"),
        ("DELETE", "/api/plugins/keys/x"),
    ):
        response = await client.request(
            method, path, headers={"X-Api-Key": key}, json={"name": "k", "scopes": ALL_SCOPES}
        )
        assert_error(response, 403, "INSUFFICIENT_PERMISSIONS")


async def test_expired_and_revoked_keys(client: httpx.AsyncClient, alice: PluginUser) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    expiring = await create_key(client, alice, expiresAt=soon)
    assert (await client.get("/api/plugins/auth/me", headers={"X-Api-Key": str(expiring["key"])})).status_code == 200
    await asyncio.sleep(2.5)  # the key's own expiry time, set by the test: semantics, not speed
    response = await client.get("/api/plugins/auth/me", headers={"X-Api-Key": str(expiring["key"])})
    assert_error(response, 401, "API_KEY_EXPIRED")

    revoked = await create_key(client, alice)
    assert (await client.delete(f"/api/plugins/keys/{revoked['id']}", headers=alice.bearer)).status_code == 200

    async def refused() -> bool:
        response = await client.get("/api/plugins/auth/me", headers={"X-Api-Key": str(revoked["key"])})
        return response.status_code == 401 and response.json()["errorCode"] == "API_KEY_REVOKED"

    await wait_until(refused, wait_seconds=5, interval=0.05)


ROUTES_BY_SCOPE = [
    ("POST", "/api/plugins/renders", "renders:create"),
    ("DELETE", "/api/plugins/renders/r1", "renders:create"),
    ("GET", "/api/plugins/renders", "renders:read"),
    ("GET", "/api/plugins/renders/r1", "renders:read"),
    ("GET", "/api/plugins/renders/r1/events", "renders:read"),
    ("GET", "/api/plugins/projects", "projects:read"),
    ("GET", "/api/plugins/projects/p1", "projects:read"),
    ("POST", "/api/plugins/projects", "projects:write"),
    ("DELETE", "/api/plugins/projects/p1", "projects:write"),
    ("POST", "/api/plugins/webhooks/register", "webhook:write"),
    ("GET", "/api/plugins/webhooks", "webhook:write"),
    ("DELETE", "/api/plugins/webhooks/w1", "webhook:write"),
    ("POST", "/api/plugins/webhooks/w1/test", "webhook:write"),
    ("GET", "/api/plugins/webhooks/callback-secret", "webhook:write"),
]


async def test_every_route_refuses_a_key_without_its_scope(client: httpx.AsyncClient, alice: PluginUser) -> None:
    keys = {}
    for scope in ALL_SCOPES:
        keys[scope] = str((await create_key(client, alice, [s for s in ALL_SCOPES if s != scope]))["key"])
    for method, path, scope in ROUTES_BY_SCOPE:
        response = await client.request(method, path, headers={"X-Api-Key": keys[scope]})
        body = assert_error(response, 403, "INSUFFICIENT_PERMISSIONS")
        assert body["details"]["requiredScope"] == scope, (method, path)  # type: ignore[index]


async def test_operator_routes_refuse_plugin_users(client: httpx.AsyncClient, alice: PluginUser) -> None:
    key = str((await create_key(client, alice))["key"])
    for headers in (alice.bearer, {"X-Api-Key": key}):
        assert_error(await client.get("/api/admin/telemetry/summary", headers=headers), 403, "INSUFFICIENT_PERMISSIONS")


async def test_spoofed_identity_is_ignored(client: httpx.AsyncClient, stack: Stack, alice: PluginUser) -> None:
    # Signed with the stack's real gateway key: still stripped, since a client never speaks for the gateway.
    forged = gateway_token(Identity(user_id=alice.user_id, auth_method="bearer", scopes=ALL_SCOPES))
    headers = {"X-Internal-Identity": forged, "X-User-Id": alice.user_id}
    assert_error(await client.get("/api/plugins/auth/me", headers=headers), 401, "AUTH_REQUIRED")
    assert_error(await client.get("/api/plugins/keys", headers=headers), 401, "AUTH_REQUIRED")


async def test_users_cannot_see_or_revoke_each_others_keys(client: httpx.AsyncClient, alice: PluginUser) -> None:
    bob = await sign_up(client)
    remember(bob.password, bob.access_token, bob.refresh_token)
    bobs_key = await create_key(client, bob)
    alices_key = await create_key(client, alice)
    listed = (await client.get("/api/plugins/keys", headers=alice.bearer)).json()["data"]
    assert bobs_key["id"] not in {k["id"] for k in listed}
    assert alices_key["id"] in {k["id"] for k in listed}
    assert_error(await client.delete(f"/api/plugins/keys/{bobs_key['id']}", headers=alice.bearer), 404, "NOT_FOUND")
    still = await client.get("/api/plugins/auth/me", headers={"X-Api-Key": str(bobs_key["key"])})
    assert still.json()["user"]["id"] == bob.user_id


async def test_deleted_users_tokens_and_keys_are_refused(client: httpx.AsyncClient, stack: Stack) -> None:
    carol = await sign_up(client)
    remember(carol.password, carol.access_token, carol.refresh_token)
    key = str((await create_key(client, carol))["key"])
    assert (await client.get("/api/plugins/auth/me", headers=carol.bearer)).status_code == 200
    result = run_cli(stack, "delete-user", carol.email)
    assert result.returncode == 0, result.stderr

    async def refused() -> bool:
        token = await client.get("/api/plugins/auth/me", headers=carol.bearer)
        by_key = await client.get("/api/plugins/auth/me", headers={"X-Api-Key": key})
        return token.json().get("errorCode") == "INVALID_TOKEN" and by_key.json().get("errorCode") in (
            "INVALID_API_KEY",
            "API_KEY_REVOKED",
        )

    await wait_until(refused, wait_seconds=5, interval=0.05)
    signin = await client.post("/api/plugins/auth/signin", json={"email": carol.email, "password": carol.password})
    assert_error(signin, 401, "INVALID_CREDENTIALS")


async def test_operator_cli(client: httpx.AsyncClient, stack: Stack) -> None:
    email, password = "cli-user@example.com", "cli-password-123"
    remember(password)
    created = run_cli(stack, "create-user", email, "--password", password, "--name", "Cli")
    assert created.returncode == 0, created.stderr
    granted = run_cli(stack, "grant-credits", email, "25", "--reference", "promo-1")
    assert granted.returncode == 0, granted.stderr
    assert "balance is now 35" in granted.stdout
    assert "balance is now 35" in run_cli(stack, "grant-credits", email, "25", "--reference", "promo-1").stdout
    assert run_cli(stack, "make-operator", email).returncode == 0
    signin = await client.post("/api/plugins/auth/signin", json={"email": email, "password": password})
    tokens = signin.json()
    remember(tokens["access_token"], tokens["refresh_token"])
    assert jwt.decode(tokens["access_token"], options={"verify_signature": False})["roles"] == ["operator"]
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    key = str(
        (await client.post("/api/plugins/keys", headers=bearer, json={"name": "k", "scopes": ALL_SCOPES})).json()[
            "data"
        ]["key"]
    )
    remember(key)
    assert "revoked 1 key(s)" in run_cli(stack, "revoke-keys", email).stdout

    async def revoked() -> bool:
        response = await client.get("/api/plugins/auth/me", headers={"X-Api-Key": key})
        return response.json().get("errorCode") == "API_KEY_REVOKED"

    await wait_until(revoked, wait_seconds=5, interval=0.05)
    missing = run_cli(stack, "make-operator", "nobody@example.com")
    assert missing.returncode == 1
    assert "NOT_FOUND" in missing.stderr


# --- several gateway replicas ----------------------------------------------------------------------------------
async def ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/health/ready")).status_code == 200


@pytest.fixture
async def second_gateway(stack: Stack) -> AsyncIterator[tuple[str, str]]:
    """Another replica: its public URL and its internal listener's (readiness)."""
    listeners = create_listeners(gateway_settings(stack))
    with serve_in_thread(listeners.public) as url, serve_in_thread(listeners.internal) as internal_url:
        yield url, internal_url


async def test_revocation_reaches_a_second_gateway_within_one_second(
    client: httpx.AsyncClient, alice: PluginUser, second_gateway: tuple[str, str]
) -> None:
    created = await create_key(client, alice)
    headers = {"X-Api-Key": str(created["key"])}
    public_url, internal_url = second_gateway
    async with (
        httpx.AsyncClient(base_url=public_url, timeout=5) as other,
        httpx.AsyncClient(base_url=internal_url, timeout=5) as other_internal,
    ):
        # Both replicas have the key cached.
        assert (await client.get("/api/plugins/auth/me", headers=headers)).status_code == 200
        assert (await other.get("/api/plugins/auth/me", headers=headers)).status_code == 200
        await wait_until(lambda: ready(other_internal), wait_seconds=30)  # listening to apikey.events
        started = time.monotonic()
        assert (await client.delete(f"/api/plugins/keys/{created['id']}", headers=alice.bearer)).status_code == 200
        while True:
            response = await other.get("/api/plugins/auth/me", headers=headers)
            if response.status_code == 401:
                break
            assert time.monotonic() - started < 5, "revocation never reached the second gateway"
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
    assert response.json()["errorCode"] == "API_KEY_REVOKED"
    print(f"revocation visible on the second gateway after {elapsed * 1000:.0f} ms")  # noqa: T201
    assert elapsed <= 1.0, f"took {elapsed:.2f}s"


async def test_rate_limit_is_shared_by_replicas_and_retry_after_is_honest(stack: Stack, alice: PluginUser) -> None:
    limits = {"rate_limit_per_minute": 5, "rate_limit_window_seconds": 3}
    with (
        serve_in_thread(create_gateway(gateway_settings(stack, **limits))) as first_url,
        serve_in_thread(create_gateway(gateway_settings(stack, **limits))) as second_url,
    ):
        async with httpx.AsyncClient(timeout=5) as http:
            me = "/api/plugins/auth/me"
            await asyncio.sleep(3 - time.time() % 3 + 0.05)  # start at a window edge: no previous window to weigh
            statuses = []
            for i in range(5):
                response = await http.get((first_url if i % 2 else second_url) + me, headers=alice.bearer)
                statuses.append(response.status_code)
                assert int(response.headers["x-ratelimit-limit"]) == 5
                assert int(response.headers["x-ratelimit-remaining"]) == 4 - i
            assert statuses == [200] * 5
            refused = await http.get(first_url + me, headers=alice.bearer)
            assert_error(refused, 429, "RATE_LIMIT_EXCEEDED")
            retry_after = int(refused.headers["retry-after"])
            assert 1 <= retry_after <= 6
            assert refused.headers["x-ratelimit-remaining"] == "0"
            assert (await http.get(second_url + me, headers=alice.bearer)).status_code == 429
            await asyncio.sleep(retry_after)
            assert (await http.get(second_url + me, headers=alice.bearer)).status_code == 200


async def test_signin_is_limited_per_ip_and_email(stack: Stack) -> None:
    settings = gateway_settings(stack, auth_rate_limit_per_minute=3)
    with serve_in_thread(create_gateway(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            body = {"email": "target@example.com", "password": "guess-123"}
            codes = [(await http.post("/api/plugins/auth/signin", json=body)).status_code for _ in range(4)]
            assert codes == [401, 401, 401, 429]
            other = {"email": "someone-else@example.com", "password": "guess-123"}
            assert (await http.post("/api/plugins/auth/signin", json=other)).status_code == 401


async def test_a_cached_token_still_expires_on_time(client: httpx.AsyncClient, stack: Stack, alice: PluginUser) -> None:
    short = forge(stack, alice, exp=int(time.time()) + 2)
    headers = {"Authorization": f"Bearer {short}"}
    assert (await client.get("/api/plugins/auth/me", headers=headers)).status_code == 200  # verified, now cached
    await asyncio.sleep(2.5)  # the token's own lifetime, set by the test: semantics, not speed
    assert_error(await client.get("/api/plugins/auth/me", headers=headers), 401, "TOKEN_EXPIRED")


async def test_failed_authentications_are_budgeted_per_ip(stack: Stack, alice: PluginUser) -> None:
    with serve_in_thread(create_gateway(gateway_settings(stack, auth_failures_per_minute=3))) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            if time.time() % 60 > 55:
                await asyncio.sleep(60 - time.time() % 60 + 0.1)  # the budget is per minute: start inside one
            for _ in range(3):
                bad = {"X-Api-Key": apikeys.generate()}  # well-formed: would cost auth a lookup each
                assert_error(await http.get("/api/plugins/auth/me", headers=bad), 401, "INVALID_API_KEY")
            refused = await http.get("/api/plugins/auth/me", headers=alice.bearer)
            assert_error(refused, 429, "RATE_LIMIT_EXCEEDED")
            assert 1 <= int(refused.headers["retry-after"]) <= 60


# --- last: nothing secret was logged ----------------------------------------------------------------------------
def test_no_secret_in_any_log(stack: Stack, capfd: pytest.CaptureFixture[str]) -> None:
    assert len(SEEN_SECRETS) > 20, "the module should have produced secrets to look for"
    texts = [p.read_text(errors="replace") for p in Path(stack.var_dir / "log").glob("*.log")]
    texts.append((stack.var_dir / "supervisor.log").read_text(errors="replace"))
    captured = capfd.readouterr()
    texts += [captured.out, captured.err]
    assert sum(len(t) for t in texts) > 1000, "expected real log output"
    leaks = [s[:12] + "…" for s in SEEN_SECRETS if any(s in t for t in texts)]
    assert leaks == []
