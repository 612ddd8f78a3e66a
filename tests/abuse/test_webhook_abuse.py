"""Webhooks as an attack tool: manual sends are limited per endpoint, refusals and the delivery log never name the
address a host resolved to, and answers that carry a secret are never cached.

Through the gateway against the session's stack (``APP_ENV=dev``: private networks allowed, link-local never), with
a real local receiver; the transport and registration checks also run on their own, with the system resolver.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.webhooks.config import Settings as WebhooksSettings
from services.webhooks.errors import InvalidInputError
from services.webhooks.service import check_destination
from services.webhooks.transport import Transport
from shared.engines import free_port
from shared.testing.fixtures import PluginUser, sign_up
from shared.testing.kafka import wait_until
from shared.testing.receiver import Receiver
from shared.testing.servers import serve_in_thread

WEBHOOKS = "/api/plugins/webhooks"
LIMIT: int = WebhooksSettings.model_fields["manual_sends_per_minute"].default
"""The default (the session stack does not change it)."""
LINK_LOCAL_SPELLINGS = ("0xa9fea9fe", "2852039166", "0251.0376.0251.0376")
"""Host names (not address literals to ``ipaddress``) that the system resolver turns into 169.254.169.254."""
LEAKS = ("169.254", "127.0.0.1", "::1")


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    hooks = Receiver()
    with serve_in_thread(hooks.app) as url:
        yield hooks, url


async def register(client: httpx.AsyncClient, user: PluginUser, url: str) -> httpx.Response:
    return await client.post(f"{WEBHOOKS}/register", json={"url": url, "events": ["*"]}, headers=user.bearer)


async def registered(client: httpx.AsyncClient, user: PluginUser, url: str) -> str:
    response = await register(client, user, url)
    assert response.status_code == 201, response.text
    webhook_id: str = response.json()["data"]["webhookId"]
    return webhook_id


async def deliveries(client: httpx.AsyncClient, user: PluginUser, webhook_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"{WEBHOOKS}/{webhook_id}/deliveries?limit=100", headers=user.bearer)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]["deliveries"]
    return found


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["errorCode"] == "RATE_LIMIT_EXCEEDED"
    assert 1 <= int(response.headers["Retry-After"]) <= 60


# -- test/resend limited per endpoint -----------------------------------------------------------------------------


async def test_test_sends_are_limited_per_endpoint_even_when_fired_at_once(
    gateway_client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    hooks, url = receiver
    user = await sign_up(gateway_client)
    path = f"/victim/{uuid.uuid4().hex[:8]}"
    webhook_id = await registered(gateway_client, user, url + path)

    answers = await asyncio.gather(
        *(gateway_client.post(f"{WEBHOOKS}/{webhook_id}/test", headers=user.bearer) for _ in range(LIMIT + 6))
    )
    accepted = [a for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code != 202]
    assert len(accepted) == LIMIT, [a.text for a in refused]
    assert len(refused) == 6
    for answer in refused:
        assert_rate_limited(answer)
    # Resend counts against the same endpoint's budget; a refused call was not counted (nor sent).
    delivery_id = accepted[0].json()["data"]["deliveryId"]
    assert_rate_limited(
        await gateway_client.post(f"{WEBHOOKS}/{webhook_id}/deliveries/{delivery_id}/resend", headers=user.bearer)
    )
    await hooks.wait_for(path, LIMIT)
    await asyncio.sleep(1)
    assert len(hooks.received(path)) == LIMIT
    assert len(await deliveries(gateway_client, user, webhook_id)) == LIMIT

    # The budget is the endpoint's: the same account's other endpoint still sends.
    other = await registered(gateway_client, user, f"{url}/other/{uuid.uuid4().hex[:8]}")
    response = await gateway_client.post(f"{WEBHOOKS}/{other}/test", headers=user.bearer)
    assert response.status_code == 202, response.text


async def test_resends_are_limited_and_a_refused_resend_is_not_requeued(
    gateway_client: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    hooks, url = receiver
    user = await sign_up(gateway_client)
    path = f"/resend/{uuid.uuid4().hex[:8]}"
    webhook_id = await registered(gateway_client, user, url + path)
    first = await gateway_client.post(f"{WEBHOOKS}/{webhook_id}/test", headers=user.bearer)
    assert first.status_code == 202, first.text
    delivery_id = first.json()["data"]["deliveryId"]
    await hooks.wait_for(path, 1)

    async def succeeded() -> bool:
        log = await deliveries(gateway_client, user, webhook_id)
        return bool(log[0]["status"] == "succeeded")

    await wait_until(succeeded, 20)
    resend = f"{WEBHOOKS}/{webhook_id}/deliveries/{delivery_id}/resend"
    statuses = [(await gateway_client.post(resend, headers=user.bearer)).status_code for _ in range(LIMIT - 1)]
    assert statuses == [202] * (LIMIT - 1)
    refused = await gateway_client.post(resend, headers=user.bearer)
    assert_rate_limited(refused)
    missing = await gateway_client.post(f"{WEBHOOKS}/{webhook_id}/deliveries/nope/resend", headers=user.bearer)
    assert missing.status_code == 404, missing.text  # an unknown delivery is still a 404, not a 429


# -- no resolved address in refusals or in the delivery log -------------------------------------------------------


@pytest.mark.parametrize("host", LINK_LOCAL_SPELLINGS)
async def test_registration_refusal_does_not_name_the_resolved_address(
    gateway_client: httpx.AsyncClient, user: PluginUser, host: str
) -> None:
    response = await register(gateway_client, user, f"https://{host}/hook")
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["errorCode"] == "INVALID_INPUT"
    assert body["details"]["field"] == "url"
    assert "reserved or special-purpose network" in body["error"]
    for leak in LEAKS:
        assert leak not in response.text


@pytest.mark.parametrize("host", LINK_LOCAL_SPELLINGS)
@pytest.mark.parametrize("allow_private", [True, False])
async def test_check_destination_does_not_name_the_resolved_address(host: str, allow_private: bool) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await check_destination(f"https://{host}/hook", allow_private=allow_private)
    assert "network" in caught.value.message
    for leak in LEAKS:
        assert leak not in caught.value.message
        assert leak not in str(caught.value.details)


async def test_transport_errors_do_not_name_the_address_connected_to() -> None:
    """``localhost`` resolves to 127.0.0.1 (and ::1); nothing listens on the port, so the OS refuses."""
    transport = Transport(timeout_seconds=5, allow_private=True)
    await transport.start()
    try:
        outcome = await transport.send(f"http://localhost:{free_port()}/hook", b"{}", {})
    finally:
        await transport.close()
    assert outcome.error is not None
    assert outcome.error.startswith("connection failed"), outcome.error
    for leak in LEAKS:
        assert leak not in outcome.error


async def test_delivery_log_does_not_name_the_address_a_host_resolved_to(
    gateway_client: httpx.AsyncClient, user: PluginUser
) -> None:
    webhook_id = await registered(gateway_client, user, f"http://localhost:{free_port()}/hook")
    response = await gateway_client.post(f"{WEBHOOKS}/{webhook_id}/test", headers=user.bearer)
    assert response.status_code == 202, response.text
    errors: list[str] = []

    async def attempted() -> bool:
        log = await deliveries(gateway_client, user, webhook_id)
        errors[:] = [a["error"] for d in log for a in d["attempts"] if a.get("error")]
        return bool(errors)

    await wait_until(attempted, 20)
    assert errors[0].startswith("connection failed"), errors
    for leak in LEAKS:
        assert all(leak not in error for error in errors), errors


# -- secrets are never cached -------------------------------------------------------------------------------------


async def test_answers_carrying_a_secret_are_no_store(
    gateway_client: httpx.AsyncClient, user: PluginUser, receiver: tuple[Receiver, str]
) -> None:
    _, url = receiver
    created = await register(gateway_client, user, f"{url}/secret/{uuid.uuid4().hex[:8]}")
    assert created.status_code == 201, created.text
    assert created.json()["data"]["secret"].startswith("whsec_")
    assert created.headers["Cache-Control"] == "no-store"
    secret = await gateway_client.get(f"{WEBHOOKS}/callback-secret", headers=user.bearer)
    assert secret.status_code == 200, secret.text
    assert secret.headers["Cache-Control"] == "no-store"
