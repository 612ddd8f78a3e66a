"""Webhooks end to end through the gateway: registration, signed delivery to a real local receiver, retries,
``Retry-After``, redirects, 410, delete, resend, the delivery log and ``callback_url`` deliveries.

The session's stack runs the dispatcher with a short retry schedule (1 s, then 2 s); the tests that need other
settings (auto-disable, killed dispatchers, two dispatchers) start their own in ``test_webhook_dispatcher.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.testing.fixtures import PluginUser, sign_up
from shared.testing.kafka import wait_until
from shared.testing.receiver import Receiver, Reply
from shared.testing.renders import submission, wait_final
from shared.testing.servers import serve_in_thread

WEBHOOKS = "/api/plugins/webhooks"


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    hooks = Receiver()
    with serve_in_thread(hooks.app) as url:
        yield hooks, url


def unique_path() -> str:
    return f"/hook/{uuid.uuid4().hex[:10]}"


async def register(
    client: httpx.AsyncClient, user: PluginUser, url: str, events: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        f"{WEBHOOKS}/register", json={"url": url, "events": events or ["*"], **extra}, headers=user.bearer
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def ping(client: httpx.AsyncClient, user: PluginUser, webhook_id: str) -> str:
    response = await client.post(f"{WEBHOOKS}/{webhook_id}/test", headers=user.bearer)
    assert response.status_code == 202, response.text
    delivery_id: str = response.json()["data"]["deliveryId"]
    return delivery_id


async def delivery(client: httpx.AsyncClient, user: PluginUser, webhook_id: str, delivery_id: str) -> dict[str, Any]:
    response = await client.get(f"{WEBHOOKS}/{webhook_id}/deliveries?limit=100", headers=user.bearer)
    assert response.status_code == 200, response.text
    found = [d for d in response.json()["data"]["deliveries"] if d["deliveryId"] == delivery_id]
    assert found, f"delivery {delivery_id} not in the log"
    return found[0]


async def wait_delivery(
    client: httpx.AsyncClient, user: PluginUser, webhook_id: str, delivery_id: str, status: str, attempts: int = 1
) -> dict[str, Any]:
    latest: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal latest
        latest = await delivery(client, user, webhook_id, delivery_id)
        return bool(latest["status"] == status and len(latest["attempts"]) >= attempts)

    try:
        await wait_until(reached, 30)
    except TimeoutError:
        raise AssertionError(f"delivery never reached {status}/{attempts}: {latest}") from None
    return latest


async def webhook_view(client: httpx.AsyncClient, user: PluginUser, webhook_id: str) -> dict[str, Any]:
    response = await client.get(WEBHOOKS, headers=user.bearer)
    assert response.status_code == 200, response.text
    views: list[dict[str, Any]] = response.json()["data"]
    return next(v for v in views if v["webhookId"] == webhook_id)


# -- registration ----------------------------------------------------------------------------------------------------


async def test_register_list_and_secret_never_listed(
    gateway_client: httpx.AsyncClient, user: PluginUser, receiver: tuple[Receiver, str]
) -> None:
    _, base = receiver
    own_secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="  # 26 bytes
    created = await register(
        gateway_client, user, base + unique_path(), ["render.completed"], secret=own_secret, description="studio"
    )
    assert created["secret"] == own_secret
    assert created["events"] == ["render.completed"]
    generated = await register(gateway_client, user, base + unique_path())
    assert generated["secret"].startswith("whsec_")
    assert generated["secret"] != own_secret

    response = await gateway_client.get(WEBHOOKS, headers=user.bearer)
    assert response.status_code == 200
    listed = response.json()["data"]
    assert [w["webhookId"] for w in listed] == [created["webhookId"], generated["webhookId"]]
    assert all("secret" not in w for w in listed)
    assert listed[0]["isActive"] is True
    assert listed[0]["failureCount"] == 0
    assert listed[0]["description"] == "studio"
    assert "whsec_" not in response.text


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"events": ["*"]}, 400, "MISSING_REQUIRED_FIELD", "url"),
        ({"url": "https://example.com/h"}, 400, "MISSING_REQUIRED_FIELD", "events"),
        ({"url": "https://example.com/h", "events": []}, 400, "INVALID_INPUT", "events"),
        ({"url": "https://example.com/h", "events": ["render.exploded"]}, 400, "INVALID_INPUT", "events"),
        ({"url": "https://example.com/h", "events": ["*"], "secret": "s3cret"}, 400, "INVALID_INPUT", "secret"),
        ({"url": "https://example.com/h", "events": ["*"], "secret": "whsec_c2hvcnQ="}, 400, "INVALID_INPUT", "secret"),
        ({"url": "ftp://example.com/h", "events": ["*"]}, 400, "INVALID_INPUT", "url"),
        ({"url": "not a url", "events": ["*"]}, 400, "INVALID_INPUT", "url"),
        ({"url": "http://169.254.169.254/latest", "events": ["*"]}, 400, "INVALID_INPUT", "url"),
        ({"url": "http://[::ffff:169.254.169.254]/", "events": ["*"]}, 400, "INVALID_INPUT", "url"),
        ({"url": "http://224.0.0.1/", "events": ["*"]}, 400, "INVALID_INPUT", "url"),
        ({"url": "https://user:pw@example.com/h", "events": ["*"]}, 400, "INVALID_INPUT", "url"),
        ({"url": "https://example.com/h", "events": ["*"], "extra": 1}, 400, "INVALID_INPUT", "extra"),
        ({"url": "https://example.com/" + "a" * 3000, "events": ["*"]}, 400, "INVALID_INPUT", "url"),
        ({"url": 42, "events": ["*"]}, 400, "INVALID_INPUT", "url"),
        ({"url": "https://example.com/h", "events": "render.completed"}, 400, "INVALID_INPUT", "events"),
    ],
)
async def test_register_refuses_bad_input(
    gateway_client: httpx.AsyncClient,
    user: PluginUser,
    body: dict[str, Any],
    status: int,
    code: str,
    field: str,
) -> None:
    response = await gateway_client.post(f"{WEBHOOKS}/register", json=body, headers=user.bearer)
    assert response.status_code == status, response.text
    assert response.json()["errorCode"] == code
    assert response.json()["details"]["field"] == field


async def test_register_refuses_malformed_json_duplicates_and_callers_without_scope(
    gateway_client: httpx.AsyncClient, user: PluginUser, receiver: tuple[Receiver, str]
) -> None:
    malformed = await gateway_client.post(
        f"{WEBHOOKS}/register", content=b"{nope", headers={**user.bearer, "content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["errorCode"] == "INVALID_INPUT"

    url = receiver[1] + unique_path()
    await register(gateway_client, user, url)
    again = await gateway_client.post(f"{WEBHOOKS}/register", json={"url": url, "events": ["*"]}, headers=user.bearer)
    assert again.status_code == 409
    assert again.json()["errorCode"] == "ALREADY_EXISTS"

    anonymous = await gateway_client.get(WEBHOOKS)
    assert anonymous.status_code == 401
    assert anonymous.json()["errorCode"] == "AUTH_REQUIRED"
    key = await gateway_client.post(
        "/api/plugins/keys", json={"name": "renders only", "scopes": ["renders:create"]}, headers=user.bearer
    )
    assert key.status_code == 201, key.text
    scoped = await gateway_client.get(WEBHOOKS, headers={"X-Api-Key": key.json()["data"]["key"]})
    assert scoped.status_code == 403
    assert scoped.json()["errorCode"] == "INSUFFICIENT_PERMISSIONS"
    assert scoped.json()["details"]["requiredScope"] == "webhook:write"


async def test_another_users_webhook_is_not_found(
    gateway_client: httpx.AsyncClient, user: PluginUser, receiver: tuple[Receiver, str]
) -> None:
    owned = await register(gateway_client, user, receiver[1] + unique_path())
    other = await sign_up(gateway_client)
    webhook_id = owned["webhookId"]
    for method, path in [
        ("DELETE", f"{WEBHOOKS}/{webhook_id}"),
        ("POST", f"{WEBHOOKS}/{webhook_id}/test"),
        ("POST", f"{WEBHOOKS}/{webhook_id}/enable"),
        ("GET", f"{WEBHOOKS}/{webhook_id}/deliveries"),
        ("POST", f"{WEBHOOKS}/{webhook_id}/deliveries/whatever/resend"),
        ("DELETE", f"{WEBHOOKS}/{uuid.uuid4()}"),
    ]:
        response = await gateway_client.request(method, path, headers=other.bearer)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["errorCode"] == "NOT_FOUND"
    assert (await webhook_view(gateway_client, user, webhook_id))["isActive"] is True


# -- delivery ------------------------------------------------------------------------------------------------------


async def test_render_events_are_delivered_signed_and_filtered(
    gateway_client: httpx.AsyncClient, user: PluginUser, receiver: tuple[Receiver, str]
) -> None:
    hooks, base = receiver
    all_path, completed_path = unique_path(), unique_path()
    every = await register(gateway_client, user, base + all_path, ["*"])
    completed_only = await register(gateway_client, user, base + completed_path, ["render.completed"])

    created = await gateway_client.post("/api/plugins/renders", json=submission(), headers=user.bearer)
    assert created.status_code == 202, created.text
    render_id = created.json()["data"]["renderId"]
    final = await wait_final(gateway_client, render_id, user.bearer)
    assert final["status"] == "completed"

    got = await hooks.wait_for(all_path, 2)
    assert [orjson.loads(r.body)["event"] for r in got] == ["render.processing", "render.completed"]
    (only,) = await hooks.wait_for(completed_path, 1)
    body = orjson.loads(only.body)
    assert body["event"] == "render.completed"
    assert body["data"]["renderId"] == render_id
    assert body["data"]["status"] == "completed"
    assert body["data"]["outputUrl"]
    assert body["data"]["creditsUsed"] == final["creditsUsed"]
    assert set(body) == {"event", "timestamp", "data"}
    assert only.headers["x-webhook-event"] == "render.completed"
    assert only.headers["content-type"] == "application/json"

    verified = Webhook(completed_only["secret"]).verify(only.body, only.headers)
    assert verified == body
    with pytest.raises(WebhookVerificationError):
        Webhook(completed_only["secret"]).verify(only.body.replace(b"completed", b"failed", 1), only.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(every["secret"]).verify(only.body, only.headers)
    # Same event, two endpoints: the same webhook-id, so a receiver behind both dedupes.
    assert got[1].headers["webhook-id"] == only.headers["webhook-id"]
    await asyncio.sleep(0.5)
    assert len(hooks.received(completed_path)) == 1, "render.processing must not reach a render.completed endpoint"


async def test_failed_twice_then_delivered_on_third_attempt_with_same_id(
    gateway_client: httpx.AsyncClient, user: PluginUser, receiver: tuple[Receiver, str]
) -> None:
    hooks, base = receiver
    path = unique_path()
    hooks.script(path, Reply(500, body=b"boom"), Reply(500, body=b"boom again"))
    webhook = await register(gateway_client, user, base + path)
    delivery_id = await ping(gateway_client, user, webhook["webhookId"])

    got = await hooks.wait_for(path, 3)
    assert [r.status for r in got] == [500, 500, 200]
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert got[1].at - got[0].at >= 0.7  # 1 s ±20%
    for received in got:
        Webhook(webhook["secret"]).verify(received.body, received.headers)

    logged = await wait_delivery(gateway_client, user, webhook["webhookId"], delivery_id, "succeeded", 3)
    assert [a["statusCode"] for a in logged["attempts"]] == [500, 500, 200]
    assert logged["attempts"][0]["responseBody"] == "boom"
    assert all(a["durationMs"] >= 0 and a["at"] for a in logged["attempts"])
    assert logged["event"] == "webhook.test"
    assert logged["nextAttemptAt"] is None
    view = await webhook_view(gateway_client, user, webhook["webhookId"])
    assert view["failureCount"] == 0
    assert view["lastSuccessAt"] is not None


async def test_retry_after_is_honoured(
    gateway_client: httpx.AsyncClient, user: PluginUser, receiver: tuple[Receiver, str]
) -> None:
    hooks, base = receiver
    path = unique_path()
    hooks.script(path, Reply(503, headers={"Retry-After": "4"}), Reply(429, headers={"Retry-After": "3"}))
    webhook = await register(gateway_client, user, base + path)
    await ping(gateway_client, user, webhook["webhookId"])
    first, second, third = await hooks.wait_for(path, 3, wait_seconds=40)
    # The schedule alone would retry after 1 s and 2 s (±20%).
    assert second.at - first.at >= 4.0
    assert third.at - second.at >= 3.0
    assert third.status == 200


async def test_redirects_are_not_followed(
    gateway_client: httpx.AsyncClient, user: PluginUser, receiver: tuple[Receiver, str]
) -> None:
    hooks, base = receiver
    path, elsewhere = unique_path(), unique_path()
    hooks.script(path, Reply(302, headers={"Location": base + elsewhere}), then=Reply(500))
    webhook = await register(gateway_client, user, base + path)
    delivery_id = await ping(gateway_client, user, webhook["webhookId"])
    logged = await wait_delivery(gateway_client, user, webhook["webhookId"], delivery_id, "pending", 1)
    assert logged["attempts"][0]["statusCode"] == 302
    assert logged["nextAttemptAt"] is not None
    await asyncio.sleep(0.5)
    assert hooks.received(elsewhere) == []


async def test_gone_disables_at_once_and_enable_reactivates(
    gateway_client: httpx.AsyncClient, user: PluginUser, receiver: tuple[Receiver, str]
) -> None:
    hooks, base = receiver
    path = unique_path()
    hooks.script(path, Reply(410))
    webhook = await register(gateway_client, user, base + path)
    delivery_id = await ping(gateway_client, user, webhook["webhookId"])
    logged = await wait_delivery(gateway_client, user, webhook["webhookId"], delivery_id, "failed", 1)
    assert len(logged["attempts"]) == 1, "410 is final: no retry"
    view = await webhook_view(gateway_client, user, webhook["webhookId"])
    assert view["isActive"] is False
    assert "410" in view["disabledReason"]

    # Disabled: its render events are held in the delivery log, not sent, until it is enabled.
    created = await gateway_client.post("/api/plugins/renders", json=submission(), headers=user.bearer)
    await wait_final(gateway_client, created.json()["data"]["renderId"], user.bearer)
    log_url = f"{WEBHOOKS}/{webhook['webhookId']}/deliveries"
    held: list[dict[str, Any]] = []

    async def render_events_held() -> bool:
        nonlocal held
        response = await gateway_client.get(log_url, headers=user.bearer)
        held = [d for d in response.json()["data"]["deliveries"] if d["event"].startswith("render.")]
        return len(held) == 2

    await wait_until(render_events_held, 30)
    assert {d["event"] for d in held} == {"render.processing", "render.completed"}
    assert all(d["status"] == "pending" and d.get("nextAttemptAt") is None and not d["attempts"] for d in held)
    await asyncio.sleep(1)
    assert len(hooks.received(path)) == 1

    enabled = await gateway_client.post(f"{WEBHOOKS}/{webhook['webhookId']}/enable", headers=user.bearer)
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["data"]["isActive"] is True
    assert enabled.json()["data"].get("disabledReason") is None
    released = (await hooks.wait_for(path, 3))[1:]
    assert all(r.status == 200 for r in released)
    assert {r.headers["webhook-id"] for r in released} == {d["eventId"] for d in held}, "the events' own ids"
    for received in released:
        Webhook(webhook["secret"]).verify(received.body, received.headers)
    await ping(gateway_client, user, webhook["webhookId"])
    assert (await hooks.wait_for(path, 4))[-1].status == 200


async def test_delete_stops_deliveries(
    gateway_client: httpx.AsyncClient, user: PluginUser, receiver: tuple[Receiver, str]
) -> None:
    hooks, base = receiver
    path = unique_path()
    hooks.script(path, Reply(500), then=Reply(200))
    webhook = await register(gateway_client, user, base + path)
    delivery_id = await ping(gateway_client, user, webhook["webhookId"])
    await hooks.wait_for(path, 1)
    deleted = await gateway_client.delete(f"{WEBHOOKS}/{webhook['webhookId']}", headers=user.bearer)
    assert deleted.status_code == 200
    assert deleted.json() == {"success": True, "message": "Webhook deleted"}

    created = await gateway_client.post("/api/plugins/renders", json=submission(), headers=user.bearer)
    await wait_final(gateway_client, created.json()["data"]["renderId"], user.bearer)
    await asyncio.sleep(3)  # past the 1 s retry of the failed ping
    assert len(hooks.received(path)) == 1, "no retry and no new event after delete"
    assert delivery_id
    listed = await gateway_client.get(WEBHOOKS, headers=user.bearer)
    assert webhook["webhookId"] not in [w["webhookId"] for w in listed.json()["data"]]
    gone = await gateway_client.get(f"{WEBHOOKS}/{webhook['webhookId']}/deliveries", headers=user.bearer)
    assert gone.status_code == 404


async def test_delivery_log_pages_and_resend(
    gateway_client: httpx.AsyncClient, user: PluginUser, receiver: tuple[Receiver, str]
) -> None:
    hooks, base = receiver
    path = unique_path()
    webhook = await register(gateway_client, user, base + path)
    ids = [await ping(gateway_client, user, webhook["webhookId"]) for _ in range(3)]
    await hooks.wait_for(path, 3)

    url = f"{WEBHOOKS}/{webhook['webhookId']}/deliveries"
    first = (await gateway_client.get(url, params={"limit": 2}, headers=user.bearer)).json()["data"]
    assert [d["deliveryId"] for d in first["deliveries"]] == ids[::-1][:2]
    assert first["nextCursor"]
    second = (
        await gateway_client.get(url, params={"limit": 2, "cursor": first["nextCursor"]}, headers=user.bearer)
    ).json()["data"]
    assert [d["deliveryId"] for d in second["deliveries"]] == [ids[0]]
    assert second["nextCursor"] is None
    for params in ({"cursor": "not-a-cursor"}, {"limit": 0}, {"limit": 101}, {"limit": "x"}):
        bad = await gateway_client.get(url, params=params, headers=user.bearer)
        assert (bad.status_code, bad.json()["errorCode"]) == (400, "INVALID_INPUT"), params

    await wait_delivery(gateway_client, user, webhook["webhookId"], ids[0], "succeeded", 1)
    first_id = hooks.received(path)[0].headers["webhook-id"]
    resent = await gateway_client.post(f"{url}/{ids[0]}/resend", headers=user.bearer)
    assert resent.status_code == 202
    assert resent.json()["data"]["deliveryId"] == ids[0]
    again = (await hooks.wait_for(path, 4))[-1]
    assert again.headers["webhook-id"] == first_id
    await wait_delivery(gateway_client, user, webhook["webhookId"], ids[0], "succeeded", 2)
    missing = await gateway_client.post(f"{url}/{uuid.uuid4()}/resend", headers=user.bearer)
    assert missing.status_code == 404
    assert missing.json()["errorCode"] == "NOT_FOUND"


async def test_callback_url_delivery_is_signed_with_the_callback_secret(
    gateway_client: httpx.AsyncClient, user: PluginUser, receiver: tuple[Receiver, str]
) -> None:
    hooks, base = receiver
    path = unique_path()
    secret_response = await gateway_client.get(f"{WEBHOOKS}/callback-secret", headers=user.bearer)
    assert secret_response.status_code == 200, secret_response.text
    secret = secret_response.json()["data"]["secret"]
    again = await gateway_client.get(f"{WEBHOOKS}/callback-secret", headers=user.bearer)
    assert again.json()["data"]["secret"] == secret, "one secret per account"

    created = await gateway_client.post(
        "/api/plugins/renders", json=submission(callback_url=base + path), headers=user.bearer
    )
    assert created.status_code == 202, created.text
    render_id = created.json()["data"]["renderId"]
    await wait_final(gateway_client, render_id, user.bearer)
    got = await hooks.wait_for(path, 2)
    events = [Webhook(secret).verify(r.body, r.headers)["event"] for r in got]
    assert events == ["render.processing", "render.completed"]
    assert orjson.loads(got[1].body)["data"]["renderId"] == render_id
    other = await sign_up(gateway_client)
    other_secret = (await gateway_client.get(f"{WEBHOOKS}/callback-secret", headers=other.bearer)).json()["data"]
    with pytest.raises(WebhookVerificationError):
        Webhook(other_secret["secret"]).verify(got[1].body, got[1].headers)
