"""Code execution in any pod but the gateway must not turn into a user or operator identity, nor into another
service's rights: against the running stack, every service's own port refuses forged internal identities, user
identities on ``/internal`` routes and service credentials outside the routes their caller may call, while the
platform's legitimate paths keep working."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.errors import ServiceUnavailableError
from shared.identity import IDENTITY_HEADER, SERVICE_HEADER, Identity, sign_service_token
from shared.internal_client import RendersClient
from shared.keys import GATEWAY_IDENTITY, SERVICE_CALLERS, dev_private_key, public_text
from shared.settings import ServiceSettings
from shared.testing.fixtures import PluginUser, Stack, sign_up
from shared.testing.identity import gateway_headers, gateway_token, service_headers
from shared.testing.renders import balance, submission

OLD_SECRET = "dev-internal-identity-secret-change-me"
"""The HS256 secret every pod shared before (the dev default): knowing it must be worth nothing now."""
DEV = ServiceSettings(app_env="dev")
# Each process's port, and the routes on it that need a user (or an operator), or any identity at all.
ROUTES: dict[str, list[tuple[str, str]]] = {
    "auth": [("GET", "/api/plugins/auth/me"), ("GET", "/api/plugins/keys")],
    "renders": [("GET", "/api/plugins/renders"), ("GET", "/api/plugins/projects")],
    "render-worker": [],
    "credits": [("GET", "/api/plugins/credits"), ("GET", "/api/plugins/credits/transactions")],
    "webhooks": [("GET", "/api/plugins/webhooks")],
    "webhooks-dispatcher": [],
    "telemetry": [("GET", "/api/admin/telemetry/summary")],  # operators only
}
WHOAMI = ("GET", "/internal/whoami")  # every process serves it; it reports the identity it was given
# Every /internal route, the callee, and the one caller the platform lets call it.
INTERNAL: list[tuple[str, str, str, dict[str, Any] | None, str]] = [
    ("credits", "POST", "/internal/credits/{user}/grants", {"credits": 5, "reference": "r", "reason": "x"}, "auth"),
    ("credits", "GET", "/internal/credits/{user}", None, "auth"),
    ("credits", "POST", "/internal/credits/{user}/reservations", {"renderId": "r1", "credits": 1}, "renders"),
    ("credits", "POST", "/internal/credits/{user}/reservations/r1/release", None, "renders"),
    ("renders", "GET", "/internal/renders/r1", None, "credits"),
    ("auth", "POST", "/internal/keys/verify", {"keyHash": "0" * 64}, "gateway"),
    ("auth", "POST", "/internal/keys/usage", {"usage": {}}, "gateway"),
    ("auth", "GET", "/internal/users/deleted?since=2026-01-01T00:00:00Z", None, "gateway"),
]


def claims(**idn: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": "gateway", "aud": "internal", "iat": now, "exp": now + 60, "idn": idn}


USER = {"user_id": "victim", "auth_method": "bearer", "scopes": ["renders:read", "renders:create"]}
OPERATOR = {"user_id": "mallory", "auth_method": "bearer", "is_operator": True}
GATEWAY_PUBLIC_KEY = dev_private_key(GATEWAY_IDENTITY).public_key()

# How a process other than the gateway could try to speak as the gateway; each returns a token for ``idn``.
FORGERIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "old-hs256-secret": lambda idn: jwt.encode(claims(**idn), OLD_SECRET, algorithm="HS256"),
    "hs256-with-public-key": lambda idn: jwt.encode(
        claims(**idn), public_text(dev_private_key(GATEWAY_IDENTITY)), algorithm="HS256"
    ),  # algorithm confusion: the public key, which every pod holds, used as an HMAC secret
    "fresh-ed25519-key": lambda idn: jwt.encode(claims(**idn), Ed25519PrivateKey.generate(), algorithm="EdDSA"),
    **{
        f"{name}-service-key": (lambda key: lambda idn: jwt.encode(claims(**idn), key, algorithm="EdDSA"))(
            dev_private_key(name)
        )
        for name in SERVICE_CALLERS
    },
    "alg-none": lambda idn: jwt.encode(claims(**idn), "", algorithm="none"),
    "expired": lambda idn: jwt.encode(
        claims(**idn) | {"iat": int(time.time()) - 600, "exp": int(time.time()) - 300},
        dev_private_key(GATEWAY_IDENTITY),
        algorithm="EdDSA",
    ),
    "wrong-audience": lambda idn: jwt.encode(
        claims(**idn) | {"aud": "service:credits"}, dev_private_key(GATEWAY_IDENTITY), algorithm="EdDSA"
    ),
    "wrong-issuer": lambda idn: jwt.encode(
        claims(**idn) | {"iss": "auth"}, dev_private_key(GATEWAY_IDENTITY), algorithm="EdDSA"
    ),
}


@pytest.fixture(scope="module")
def http() -> Any:
    with httpx.Client(timeout=10) as client:
        yield client


def assert_refused(response: httpx.Response, status: int = 401, what: str = "") -> None:
    assert response.status_code == status, f"{what}: {response.status_code} {response.text[:200]}"
    body = response.json()
    assert body["success"] is False
    assert body["errorCode"] == ("AUTH_REQUIRED" if status == 401 else "INSUFFICIENT_PERMISSIONS"), what


def test_every_service_accepts_a_gateway_identity_on_its_user_routes(
    stack: Stack, http: httpx.Client, user: PluginUser
) -> None:
    """The control: what the forgeries below imitate does work, so their refusal is the signature's doing."""
    for service, routes in ROUTES.items():
        for method, path in routes:
            fields = OPERATOR if path.startswith("/api/admin") else USER | {"user_id": user.user_id}
            response = http.request(method, stack.service_urls[service] + path, headers=gateway_headers(**fields))
            assert response.status_code == 200, (service, path, response.text[:200])


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_every_service_refuses_forged_user_and_operator_identities(
    stack: Stack, http: httpx.Client, forgery: str
) -> None:
    for idn in (USER, OPERATOR):
        token = FORGERIES[forgery](idn)
        for service, routes in ROUTES.items():
            for method, path in [*routes, WHOAMI]:
                url = stack.service_urls[service] + path
                what = f"{forgery} {'operator' if idn is OPERATOR else 'user'} at {service} {path}"
                assert_refused(http.request(method, url, headers={IDENTITY_HEADER: token}), what=what)
                # Nor is it taken as a service credential (a leaf might try the other header).
                assert_refused(http.request(method, url, headers={SERVICE_HEADER: token}), what=what)


def test_a_service_credential_is_never_a_user_identity(stack: Stack, http: httpx.Client) -> None:
    for service, routes in ROUTES.items():
        for method, path in routes:
            for caller in SERVICE_CALLERS:
                credential = service_headers(caller, service)
                url = stack.service_urls[service] + path
                assert_refused(http.request(method, url, headers=credential), what=f"{caller} at {service}{path}")
                swapped = {IDENTITY_HEADER: credential[SERVICE_HEADER]}
                assert_refused(http.request(method, url, headers=swapped), what=f"{caller} at {service}{path}")


def test_internal_routes_refuse_gateway_identities(stack: Stack, http: httpx.Client) -> None:
    """Even a genuine gateway identity of an operator: /internal answers services only."""
    for service, method, path, body, _ in INTERNAL:
        url = stack.service_urls[service] + path.format(user="victim")
        for idn in (USER, OPERATOR):
            response = http.request(method, url, json=body, headers=gateway_headers(**idn))
            assert_refused(response, what=f"gateway identity at {service}{path}")
    for service in ROUTES:  # whoami too: it is an /internal route
        response = http.get(stack.service_urls[service] + WHOAMI[1], headers=gateway_headers(**OPERATOR))
        assert_refused(response, what=f"gateway identity at {service} whoami")


def test_internal_routes_accept_only_their_callers(stack: Stack, http: httpx.Client) -> None:
    for service, method, path, body, allowed in INTERNAL:
        url = stack.service_urls[service] + path.format(user=f"user-{uuid.uuid4().hex[:8]}")
        ok = http.request(method, url, json=body, headers=service_headers(allowed, service))
        refusals = ("AUTH_REQUIRED", "INSUFFICIENT_PERMISSIONS")  # the route ran: 2xx, 402 credits, 401 bad key
        assert ok.json().get("errorCode") not in refusals, (allowed, service, path, ok.text[:200])
        for caller in SERVICE_CALLERS:
            if caller != allowed:
                response = http.request(method, url, json=body, headers=service_headers(caller, service))
                assert_refused(response, 403, f"{caller} at {service}{path}")
        forged = {
            "unknown-caller": sign_service_token("webhooks", service, dev_private_key("webhooks")),
            "not-the-callers-key": sign_service_token(allowed, service, Ed25519PrivateKey.generate()),
            "for-another-callee": sign_service_token(allowed, "telemetry", dev_private_key(allowed)),
            "expired": sign_service_token(allowed, service, dev_private_key(allowed), ttl_seconds=-300),
            "gateway-identity-key": sign_service_token(allowed, service, dev_private_key(GATEWAY_IDENTITY)),
            "alg-none": jwt.encode({"iss": allowed, "aud": f"service:{service}", "exp": 2**33}, "", "none"),
            "old-hs256-secret": jwt.encode(
                {"iss": allowed, "aud": f"service:{service}", "iat": 0, "exp": 2**33}, OLD_SECRET, "HS256"
            ),
        }
        for name, token in forged.items():
            response = http.request(method, url, json=body, headers={SERVICE_HEADER: token})
            assert_refused(response, what=f"{name} at {service}{path}")


async def test_legitimate_paths_still_work(stack: Stack, gateway_client: httpx.AsyncClient) -> None:
    # Sign up: auth grants the signup credits through credits' internal API, as itself.
    alice: PluginUser = await sign_up(gateway_client)
    credits = await balance(gateway_client, alice.bearer)
    assert credits["balance"] == credits["totalEarned"] > 0
    # API key verification: the gateway asks auth, with its own service credential.
    created = await gateway_client.post(
        "/api/plugins/keys", headers=alice.bearer, json={"name": "abuse", "scopes": ["renders:read"]}
    )
    assert created.status_code == 201, created.text
    key = created.json()["data"]["key"]
    me = await gateway_client.get("/api/plugins/auth/me", headers={"X-Api-Key": key})
    assert me.status_code == 200
    assert me.json()["user"]["id"] == alice.user_id
    # Create a render: renders reserves the credits through credits' internal API.
    response = await gateway_client.post("/api/plugins/renders", headers=alice.bearer, json=submission())
    assert response.status_code in (200, 201, 202), response.text
    render_id = response.json()["data"]["renderId"]
    assert (await balance(gateway_client, alice.bearer))["balance"] < credits["balance"]
    # Credits' reconciler reads the render's status from renders, as credits; as anyone else it is refused.
    reconciler = RendersClient(stack.service_urls["renders"], caller="credits", settings=DEV)
    impostor = RendersClient(stack.service_urls["renders"], caller="auth", settings=DEV)
    try:
        state = await reconciler.render_state(render_id)
        assert state is not None
        assert state.renderId == render_id
        assert await reconciler.render_state("no-such-render") is None
        with pytest.raises(ServiceUnavailableError):
            await impostor.render_state(render_id)
    finally:
        await reconciler.aclose()
        await impostor.aclose()


def test_the_gateways_token_reaches_services_and_verifies_only_with_its_public_key() -> None:
    """The tokens the tests sign as "the gateway" are what the dev gateway signs: EdDSA, nothing symmetric."""
    token = gateway_token(Identity(**USER))
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert jwt.decode(token, GATEWAY_PUBLIC_KEY, algorithms=["EdDSA"], audience="internal")["idn"]["user_id"]
