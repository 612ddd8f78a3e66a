"""The Python SDK end to end against the real stack, every endpoint group, each test run with the sync ``Client``
and with the ``AsyncClient`` (the ``connect`` fixture), plus the example SketchUp CLI run as a subprocess.

Each client records the requests it sends (httpx event hooks) so the tests can tell that ``wait(follow="sse")``
followed the event stream and ``follow="poll"`` polled. Webhook deliveries reach a real local receiver and are
verified with the SDK's ``verify_webhook``.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Unpack, cast
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
import renderiq
from PIL import Image
from renderiq import AsyncClient, AsyncRender, Client, ImageInput, Render, RenderOptions

from shared.testing.fixtures import Stack, run_cli
from shared.testing.receiver import Receiver
from shared.testing.renders import GEMINI_MODEL, image_bytes
from shared.testing.servers import serve_in_thread

T = TypeVar("T")
AnyClient = Client | AsyncClient
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]
RENDER_SCOPES = ["renders:create", "renders:read"]


async def run(value: Awaitable[T] | T) -> T:
    """The result of an SDK call made with either client (awaited when it is the async client's)."""
    if inspect.isawaitable(value):
        return cast(T, await value)
    return value


async def create(client: AnyClient, image: ImageInput, **options: Unpack[RenderOptions]) -> Render | AsyncRender:
    """``renders.create`` with either client (their handles differ: ``Render`` / ``AsyncRender``)."""
    if isinstance(client, AsyncClient):
        return await client.renders.create(image, **options)
    return client.renders.create(image, **options)


async def collect(items: Iterator[T] | AsyncIterator[T]) -> list[T]:
    if isinstance(items, AsyncIterator):
        return [item async for item in items]
    return list(items)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        await asyncio.sleep(0.2)


def png_size(content: bytes) -> tuple[int, int]:
    assert content.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(content)) as image:
        assert image.format == "PNG"
        return image.size


@dataclass
class Connector:
    """Makes SDK clients of one kind against the stack, identified as SketchUp 1.4.2; records their requests."""

    stack: Stack
    kind: str
    sent: list[str] = field(default_factory=list)
    made: list[AnyClient] = field(default_factory=list)
    transports: list[httpx.Client | httpx.AsyncClient] = field(default_factory=list)

    def __call__(self, **options: Any) -> AnyClient:
        options = {"platform": "sketchup", "plugin_version": "1.4.2", **options}
        client: AnyClient
        if self.kind == "sync":
            http = httpx.Client(event_hooks={"request": [self._record]})
            client = Client(self.stack.gateway_url, http_client=http, **options)
            self.transports.append(http)
        else:
            async_http = httpx.AsyncClient(event_hooks={"request": [self._arecord]})
            client = AsyncClient(self.stack.gateway_url, http_client=async_http, **options)
            self.transports.append(async_http)
        self.made.append(client)
        return client

    def _record(self, request: httpx.Request) -> None:
        self.sent.append(f"{request.method} {request.url.path}")

    async def _arecord(self, request: httpx.Request) -> None:
        self._record(request)

    async def account(self, credits: int = 0) -> tuple[AnyClient, str, str]:
        """A new user's client (signed in with Bearer tokens), its email and password; ``credits`` granted."""
        client = self()
        email, password = f"sdk-{uuid.uuid4().hex[:10]}@example.com", f"pw-{uuid.uuid4().hex}"
        await run(client.auth.signup(email, password, "SDK"))
        if credits:
            granted = await asyncio.to_thread(run_cli, self.stack, "grant-credits", email, str(credits))
            assert granted.returncode == 0, granted.stderr
        return client, email, password

    async def close(self) -> None:
        """The clients do not close an ``http_client`` they were given: close those too."""
        for client in self.made:
            if isinstance(client, AsyncClient):
                await client.aclose()
            else:
                client.close()
        for transport in self.transports:
            if isinstance(transport, httpx.AsyncClient):
                await transport.aclose()
            else:
                transport.close()


@pytest.fixture(params=["sync", "async"])
async def connect(request: pytest.FixtureRequest, stack: Stack) -> AsyncIterator[Connector]:
    connector = Connector(stack, request.param)
    yield connector
    await connector.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    hooks = Receiver()
    with serve_in_thread(hooks.app) as url:
        yield hooks, url


# -- auth and keys ----------------------------------------------------------------------------------------------------


async def test_signup_signin_me_refresh_signout(connect: Connector) -> None:
    client = connect()
    email, password = f"sdk-{uuid.uuid4().hex[:10]}@example.com", "correct-horse-battery"
    signed_up = await run(client.auth.signup(email, password, "Ada"))
    assert (signed_up.user.email, signed_up.user.name, signed_up.token_type) == (email, "Ada", "Bearer")
    assert signed_up.user.credits.balance == 10
    assert client.credentials.access_token == signed_up.access_token
    assert (await run(client.auth.me())).id == signed_up.user.id

    with pytest.raises(renderiq.ConflictError) as duplicate:
        await run(client.auth.signup(email, password))
    assert duplicate.value.error_code == "ALREADY_EXISTS"
    with pytest.raises(renderiq.ValidationError):
        await run(client.auth.signup(f"x-{email}", "short", set_token=False))
    with pytest.raises(renderiq.AuthenticationError) as wrong:
        await run(client.auth.signin(email, "not-the-password"))
    assert (wrong.value.error_code, wrong.value.status_code) == ("INVALID_CREDENTIALS", 401)
    assert wrong.value.request_id

    signed_in = await run(client.auth.signin(email, password))
    renewed = await run(client.auth.refresh())
    assert renewed.refresh_token != signed_in.refresh_token
    assert client.credentials.refresh_token == renewed.refresh_token
    assert (await run(client.auth.me())).email == email

    await run(client.auth.signout())
    assert client.credentials.access_token is None
    with pytest.raises(renderiq.AuthenticationError) as revoked:
        await run(client.auth.refresh(renewed.refresh_token))
    assert revoked.value.error_code == "REFRESH_FAILED"
    with pytest.raises(renderiq.AuthenticationError) as anonymous:
        await run(client.auth.me())
    assert anonymous.value.error_code == "AUTH_REQUIRED"


async def test_listing_keys_follows_the_cursor_to_every_key(connect: Connector) -> None:
    client, _, _ = await connect.account()
    created = [await run(client.keys.create(f"machine {i}", RENDER_SCOPES)) for i in range(5)]
    first = await run(client.keys.page(limit=2))
    assert [k.id for k in first.keys] == [c.id for c in reversed(created)][:2]
    assert first.next_cursor
    listed = await run(client.keys.list(page_size=2))  # three pages
    assert [k.id for k in listed] == [c.id for c in reversed(created)]


async def test_api_keys_create_list_use_and_delete(connect: Connector) -> None:
    client, _, _ = await connect.account()
    created = await run(client.keys.create("SketchUp laptop", RENDER_SCOPES))
    assert created.key.startswith("rk_live_")
    assert created.scopes == RENDER_SCOPES
    listed = [k for k in await run(client.keys.list()) if k.id == created.id]
    assert len(listed) == 1
    assert (listed[0].key_prefix, listed[0].is_active) == (created.key_prefix, True)
    assert "key" not in (listed[0].model_extra or {}), "the key itself is shown only at creation"

    plugin = connect(api_key=created.key)
    assert (await run(plugin.renders.list())).renders == []
    assert (await run(plugin.credits.get())).balance == 10
    with pytest.raises(renderiq.PermissionDeniedError) as no_keys:
        await run(plugin.keys.list())
    assert no_keys.value.error_code == "INSUFFICIENT_PERMISSIONS"
    with pytest.raises(renderiq.PermissionDeniedError) as no_scope:
        await run(plugin.projects.list())
    assert no_scope.value.required_scope == "projects:read"
    with pytest.raises(renderiq.ValidationError) as unknown_scope:
        await run(client.keys.create("bad", ["renders:everything"]))
    assert unknown_scope.value.error_code == "INVALID_INPUT"

    await run(client.keys.delete(created.id))

    async def refused() -> bool:
        try:
            await run(plugin.credits.get())
        except renderiq.AuthenticationError as exc:
            return exc.error_code == "API_KEY_REVOKED"
        return False

    await eventually(refused, "the deleted key is refused")


# -- renders ----------------------------------------------------------------------------------------------------------


async def test_render_from_a_path_followed_over_sse_and_downloaded(connect: Connector, tmp_path: Path) -> None:
    client, _, _ = await connect.account()
    key = await run(client.keys.create("plugin", RENDER_SCOPES))
    plugin = connect(api_key=key.key)
    viewport = tmp_path / "viewport.png"
    viewport.write_bytes(image_bytes())

    render = await create(plugin, viewport, quality="standard", style="dramatic", aspect_ratio="16:9")
    assert render.created is not None
    assert (render.created.status, render.created.credits_cost) == ("pending", 5)
    seen: list[renderiq.RenderStatus] = []
    final = await run(render.wait(timeout=120, follow="sse", on_status=seen.append))
    assert final.status == "completed", final.error
    assert seen[-1] == final
    assert (final.platform, final.plugin_version, final.credits_used) == ("sketchup", "1.4.2", 5)
    assert f"GET /api/plugins/renders/{render.id}/events" in connect.sent
    assert f"GET /api/plugins/renders/{render.id}" not in connect.sent, "the stream worked: no polling"

    saved = await run(render.download(tmp_path / "out" / "render.png"))
    assert png_size(saved.read_bytes()) == (1920, 1080)
    replay = await collect(plugin.renders.events(render.id))
    assert [s.status for s in replay] == ["completed"], "a finished render's stream says so and ends"


async def test_render_from_bytes_polled_and_read(connect: Connector) -> None:
    client, _, _ = await connect.account()
    render = await create(client, image_bytes(600, 600), aspect_ratio="1:1", prompt="warm evening light")
    final = await run(render.wait(timeout=120, poll_interval=0.2, follow="poll"))
    assert final.status == "completed", final.error
    assert not any(line.endswith("/events") for line in connect.sent)
    assert png_size(await run(render.read())) == (3840, 3840), "quality defaults to high: long side 3840"
    again = (await run(client.renders.get(render.id))).output_url
    assert again
    assert final.output_url
    assert urlsplit(again).path == urlsplit(final.output_url).path, "the same file (signed anew: its expiry moves)"


async def test_cancel_a_running_render(connect: Connector) -> None:
    client, _, _ = await connect.account()
    render = await create(client, image_bytes(), model=GEMINI_MODEL, prompt="SLOW_5", quality="standard")
    canceled = await run(render.cancel())
    assert canceled.status == "canceled"
    assert (await run(render.wait(timeout=30))).status == "canceled"
    with pytest.raises(renderiq.ConflictError) as again:
        await run(render.cancel())
    assert again.value.error_code == "INVALID_STATE"
    with pytest.raises(renderiq.RenderNotCompletedError):
        await run(render.read())


async def test_list_filters_and_pagination(connect: Connector) -> None:
    client, _, _ = await connect.account(credits=100)
    ids = []
    for _ in range(3):
        render = await create(client, image_bytes(), quality="standard")
        ids.append(render.id)
    slow = await create(client, image_bytes(), model=GEMINI_MODEL, prompt="SLOW_5", quality="standard")
    await run(slow.cancel())
    newest_first = [slow.id, *reversed(ids)]

    first = await run(client.renders.list(limit=3))
    assert [r.render_id for r in first.renders] == newest_first[:3]
    assert first.next_cursor
    rest = await run(client.renders.list(limit=3, cursor=first.next_cursor))
    assert [r.render_id for r in rest.renders] == newest_first[3:]
    assert rest.next_cursor is None
    assert [r.render_id for r in await collect(client.renders.iter(page_size=1))] == newest_first
    canceled = await collect(client.renders.iter(status="canceled"))
    assert [r.render_id for r in canceled] == [slow.id]


async def test_projects_crud_and_renders_of_a_project(connect: Connector) -> None:
    client, _, _ = await connect.account()
    name = f"Villa Rosa {uuid.uuid4().hex[:6]}"
    project = await run(client.projects.create(name, description="south facade", platform="sketchup"))
    assert (project.name, project.description, project.platform, project.render_count) == (
        name,
        "south facade",
        "sketchup",
        0,
    )
    assert (await run(client.projects.get(project.id))).slug == project.slug
    page = await run(client.projects.list(platform="sketchup", limit=10))
    assert [p.id for p in page.projects] == [project.id]
    assert (page.total, page.limit, page.offset) == (1, 10, 0)

    render = await create(client, image_bytes(), quality="standard", project_id=project.id)
    await run(render.wait(timeout=120))
    in_project = await run(client.renders.list(project_id=project.id))
    assert [r.render_id for r in in_project.renders] == [render.id]
    assert (await run(client.projects.get(project.id))).render_count == 1

    await run(client.projects.delete(project.id))
    with pytest.raises(renderiq.NotFoundError):
        await run(client.projects.get(project.id))


async def test_credits_and_transactions(connect: Connector) -> None:
    client, _, _ = await connect.account(credits=100)
    credits = await run(client.credits.get())
    assert (credits.balance, credits.total_earned, credits.total_spent) == (110, 110, 0)
    render = await create(client, image_bytes(), quality="standard")
    assert (await run(render.wait(timeout=120))).status == "completed"

    async def captured() -> bool:
        return (await run(client.credits.get())).total_spent == 5

    await eventually(captured, "the render's credits are spent")
    assert (await run(client.credits.get())).balance == 105
    page = await run(client.credits.transactions(limit=2))
    assert len(page.transactions) == 2
    assert page.next_cursor
    every = await collect(client.credits.iter_transactions(page_size=2))
    assert [t.id for t in every[:2]] == [t.id for t in page.transactions]
    assert sorted(t.kind for t in every) == ["capture", "grant", "grant", "reserve"]
    assert sum(t.amount for t in every) == 105


# -- webhooks -------------------------------------------------------------------------------------------------------


async def test_webhooks_register_test_verify_deliveries_enable_delete(
    connect: Connector, receiver: tuple[Receiver, str]
) -> None:
    hooks, base = receiver
    client, _, _ = await connect.account()
    path = f"/sdk/{uuid.uuid4().hex[:10]}"
    hook = await run(client.webhooks.register(base + path, ["*"], description="studio"))
    assert hook.secret.startswith("whsec_")
    listed = [w for w in await run(client.webhooks.list()) if w.webhook_id == hook.webhook_id]
    assert [(w.url, w.is_active, w.description) for w in listed] == [(base + path, True, "studio")]

    delivery = await run(client.webhooks.test(hook.webhook_id))
    received = (await hooks.wait_for(path, 1))[0]
    event = renderiq.verify_webhook(received.body, received.headers, hook.secret)
    assert (event.event, event.id) == ("webhook.test", received.headers["webhook-id"])
    with pytest.raises(renderiq.WebhookVerificationError):
        renderiq.verify_webhook(received.body, received.headers, await run(client.webhooks.callback_secret()))

    async def succeeded() -> bool:
        page = await run(client.webhooks.deliveries(hook.webhook_id, limit=10))
        found = [d for d in page.deliveries if d.delivery_id == delivery.delivery_id]
        return bool(found and found[0].status == "succeeded" and found[0].attempts[0].status_code == 200)

    await eventually(succeeded, "the test delivery is logged as succeeded")
    resent = await run(client.webhooks.resend(hook.webhook_id, delivery.delivery_id))
    assert resent.delivery_id == delivery.delivery_id
    again = (await hooks.wait_for(path, 2))[1]
    assert again.headers["webhook-id"] == received.headers["webhook-id"], "a resend is the same event"
    logged = await collect(client.webhooks.iter_deliveries(hook.webhook_id, page_size=1))
    assert delivery.delivery_id in [d.delivery_id for d in logged]
    assert (await run(client.webhooks.enable(hook.webhook_id))).is_active

    await run(client.webhooks.delete(hook.webhook_id))
    assert hook.webhook_id not in [w.webhook_id for w in await run(client.webhooks.list())]
    with pytest.raises(renderiq.NotFoundError):
        await run(client.webhooks.delete(hook.webhook_id))


async def test_callback_url_deliveries_verify_with_the_callback_secret(
    connect: Connector, receiver: tuple[Receiver, str]
) -> None:
    hooks, base = receiver
    client, _, _ = await connect.account()
    secret = await run(client.webhooks.callback_secret())
    assert secret.startswith("whsec_")
    path = f"/callback/{uuid.uuid4().hex[:10]}"
    render = await create(client, image_bytes(), quality="standard", callback_url=base + path)
    assert (await run(render.wait(timeout=120))).status == "completed"

    async def completed_delivered() -> bool:
        events = [renderiq.verify_webhook(r.body, r.headers, secret) for r in hooks.received(path)]
        return any(e.event == "render.completed" for e in events)

    await eventually(completed_delivered, "render.completed reaches the callback_url")
    events = [renderiq.verify_webhook(r.body, r.headers, secret) for r in hooks.received(path)]
    completed = next(e for e in events if e.event == "render.completed")
    assert (completed.data.render_id, completed.data.status) == (render.id, "completed")
    assert completed.data.output_url


# -- errors, idempotency, health ----------------------------------------------------------------------------------


async def test_typed_errors(connect: Connector) -> None:
    client, _, _ = await connect.account()
    with pytest.raises(renderiq.NotFoundError) as missing:
        await run(client.renders.get(str(uuid.uuid4())))
    assert (missing.value.error_code, missing.value.status_code) == ("NOT_FOUND", 404)
    assert missing.value.request_id

    with pytest.raises(renderiq.InsufficientCreditsError) as poor:
        await create(client, image_bytes(), quality="ultra")
    assert (poor.value.required_credits, poor.value.available_credits, poor.value.status_code) == (15, 10, 402)

    with pytest.raises(renderiq.ValidationError) as unnamed:
        await run(client.projects.create(""))
    assert (unnamed.value.status_code, unnamed.value.field) == (400, "name")
    with pytest.raises(renderiq.ValidationError) as broken:
        await create(client, PNG_MAGIC + b"not really an image", quality="standard")
    assert (broken.value.error_code, broken.value.status_code) == ("INVALID_IMAGE", 400)
    with pytest.raises(renderiq.ValidationError) as local:
        await create(client, b"GIF89a not supported")
    assert (local.value.error_code, local.value.status_code) == ("INVALID_IMAGE", None)

    stranger = connect(api_key="rk_live_" + "A" * 40)
    with pytest.raises(renderiq.AuthenticationError) as bad_key:
        await run(stranger.credits.get())
    assert bad_key.value.error_code == "INVALID_API_KEY"


async def test_same_idempotency_key_gives_the_same_render_charged_once(connect: Connector) -> None:
    client, _, _ = await connect.account()
    image, key = image_bytes(), f"view-{uuid.uuid4().hex}"
    first = await create(client, image, quality="standard", idempotency_key=key)
    second = await create(client, image, quality="standard", idempotency_key=key)
    assert second.id == first.id
    with pytest.raises(renderiq.IdempotencyConflictError) as conflict:
        await create(client, image, quality="standard", style="soft", idempotency_key=key)
    assert conflict.value.error_code == "IDEMPOTENCY_CONFLICT"
    await run(first.wait(timeout=120))

    async def charged_once() -> bool:
        credits = await run(client.credits.get())
        return (credits.total_spent, credits.balance) == (5, 5)

    await eventually(charged_once, "one render charged")
    assert [r.render_id for r in (await run(client.renders.list())).renders] == [first.id]


async def test_health_reports_the_detected_plugin(connect: Connector) -> None:
    health = await run(connect().health())
    assert health.status == "healthy"
    assert health.is_healthy
    assert (health.api.platform, health.api.version_detected) == ("sketchup", "1.4.2")
    assert health.services["rendering"] == "healthy"


async def test_jwks_lists_the_keys_that_sign_access_tokens(connect: Connector) -> None:
    signed_up = await run(connect().auth.signup(f"jwks-{uuid.uuid4().hex[:10]}@example.com", "jwks-password-1"))
    kid = jwt.get_unverified_header(signed_up.access_token)["kid"]
    keys = (await run(connect().auth.jwks())).keys
    assert kid in [key["kid"] for key in keys]
    assert all("d" not in key for key in keys), "public keys only"


# -- the example plugin CLI -------------------------------------------------------------------------------------------


def plugin_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RENDERIQ_")}
    command = [sys.executable, str(ROOT / "examples" / "sketchup_plugin.py"), *args, "--base-url", stack.gateway_url]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, check=False)


async def test_example_cli_signs_in_creates_a_key_renders_and_downloads(stack: Stack, tmp_path: Path) -> None:
    email, password = f"cli-{uuid.uuid4().hex[:10]}@example.com", f"pw-{uuid.uuid4().hex}"
    async with AsyncClient(stack.gateway_url) as client:
        await client.auth.signup(email, password)
    viewport, output = tmp_path / "viewport.png", tmp_path / "renders" / "out.png"
    viewport.write_bytes(image_bytes())

    args = ["render", str(viewport), "--output", str(output), "--email", email, "--password", password]
    style = ["--quality", "standard", "--style", "dramatic", "--aspect-ratio", "4:3", "--prompt", "dusk"]
    result = await asyncio.to_thread(plugin_cli, stack, *args, *style, "--timeout", "120")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Created API key rk_live_" in result.stdout
    assert "Submitted render" in result.stdout
    assert "completed 100%" in result.stdout
    assert f"Saved {output}" in result.stdout
    assert png_size(output.read_bytes()) == (1920, 1440)

    async with AsyncClient(stack.gateway_url) as client:
        await client.auth.signin(email, password)
        keys = await client.keys.list()
        renders = (await client.renders.list()).renders
    assert [k.scopes for k in keys] == [RENDER_SCOPES]
    assert [(r.platform, r.plugin_version, r.style, r.aspect_ratio) for r in renders] == [
        ("sketchup", "1.0.0", "dramatic", "4:3")
    ]

    login = await asyncio.to_thread(plugin_cli, stack, "login", "--email", email, "--password", password)
    assert login.returncode == 0, login.stdout + login.stderr
    key = login.stdout.strip().splitlines()[-1]
    assert key.startswith("rk_live_")
    with_key = await asyncio.to_thread(plugin_cli, stack, *args[:4], "--api-key", key, "--quality", "standard")
    assert with_key.returncode == 0, with_key.stdout + with_key.stderr
    assert "Signed in" not in with_key.stdout, "a kept key needs no password"
    assert png_size(output.read_bytes()) == (1920, 1080)

    refused = await asyncio.to_thread(plugin_cli, stack, *args[:4], "--email", email, "--password", "wrong-password")
    assert refused.returncode == 1
    assert "[INVALID_CREDENTIALS]" in refused.stderr
    poor = await asyncio.to_thread(plugin_cli, stack, *args[:4], "--api-key", key, "--quality", "ultra")
    assert poor.returncode == 1
    assert "[INSUFFICIENT_CREDITS]" in poor.stderr
