"""``AsyncClient``: the asyncio client, the same API as ``Client`` with awaits (same requests, same flow)."""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from datetime import datetime
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TypeVar, Unpack

import httpx

from renderiq import _endpoints as ep
from renderiq import models
from renderiq._base import BaseClient, RenderHandle, Resource, output_url, write_output
from renderiq._call import Call
from renderiq._core import Outcome, Sleep, Step
from renderiq._endpoints import Follow, RenderOptions
from renderiq._waiting import STREAM_FAILURES, StatusReader, WaitPlan
from renderiq.images import ImageInput

T = TypeVar("T")


async def apaginate(fetch: Callable[[str | None], Awaitable[models.CursorPage[T]]]) -> AsyncIterator[T]:
    """Every item of a cursor-paginated list, fetching pages as the iteration reaches them."""
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        for item in page.items:
            yield item
        if not page.next_cursor:
            return
        cursor = page.next_cursor


class AsyncClient(BaseClient[httpx.AsyncClient]):
    """The Renderiq plugin API for asyncio; arguments as ``Client``. ``async with AsyncClient(...) as client:``."""

    def _new_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient()

    async def _run(self, call: Call[T]) -> T:
        run = self._core.start(call)
        outcome: Outcome = None
        while (step := run.advance(outcome)) is not None:
            outcome = await self._perform(step)
        return run.result

    async def _perform(self, step: Step) -> Outcome:
        """Sleep, or send: the response (an error's body read even when streaming) or the transport error."""
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        try:
            response = await self._http.send(step.request, stream=step.stream)
            if step.stream and not response.is_success:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except httpx.TransportError as exc:
            return exc
        return response

    @cached_property
    def auth(self) -> AsyncAuth:
        return AsyncAuth(self)

    @cached_property
    def keys(self) -> AsyncKeys:
        return AsyncKeys(self)

    @cached_property
    def renders(self) -> AsyncRenders:
        return AsyncRenders(self)

    @cached_property
    def projects(self) -> AsyncProjects:
        return AsyncProjects(self)

    @cached_property
    def credits(self) -> AsyncCreditsResource:
        return AsyncCreditsResource(self)

    @cached_property
    def webhooks(self) -> AsyncWebhooks:
        return AsyncWebhooks(self)

    async def health(self) -> models.Health:
        """The platform's health (no credentials needed); ``status`` is ``down`` when it cannot serve."""
        return await self._run(ep.health())

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()


class AsyncAuth(Resource[AsyncClient]):
    """Accounts and tokens. ``signup``/``signin``/``refresh`` make the client use the new tokens (``set_token``)."""

    async def signup(
        self, email: str, password: str, name: str | None = None, *, set_token: bool = True
    ) -> models.AuthResponse:
        return self._client._signed_in(await self._client._run(ep.signup(email, password, name)), set_token)

    async def signin(self, email: str, password: str, *, set_token: bool = True) -> models.AuthResponse:
        return self._client._signed_in(await self._client._run(ep.signin(email, password)), set_token)

    async def refresh(self, refresh_token: str | None = None, *, set_token: bool = True) -> models.TokenPair:
        """Renew the token pair (the refresh token is spent: reusing it revokes its whole family)."""
        call = ep.refresh(self._client._held_refresh_token(refresh_token))
        return self._client._signed_in(await self._client._run(call), set_token)

    async def signout(self, refresh_token: str | None = None) -> None:
        token = self._client._signing_out(refresh_token)
        await self._client._run(ep.signout(token))
        self._client._signed_out(token)

    async def me(self) -> models.User:
        return await self._client._run(ep.me())

    async def jwks(self) -> models.Jwks:
        return await self._client._run(ep.jwks())


class AsyncKeys(Resource[AsyncClient]):
    """API keys (managed with an access token only, never with a key)."""

    async def create(
        self, name: str, scopes: builtins.list[str], expires_at: datetime | None = None
    ) -> models.CreatedApiKey:
        return await self._client._run(ep.create_key(name, scopes, expires_at))

    async def list(self, *, page_size: int | None = None) -> builtins.list[models.ApiKey]:
        """Every key of the account (revoked ones too), newest first, however many pages that takes."""
        return [key async for key in apaginate(lambda cursor: self.page(limit=page_size, cursor=cursor))]

    async def page(self, *, limit: int | None = None, cursor: str | None = None) -> models.KeysPage:
        """One page, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""
        return await self._client._run(ep.list_keys(limit, cursor))

    async def delete(self, key_id: str) -> None:
        await self._client._run(ep.delete_key(key_id))


class AsyncRenders(Resource[AsyncClient]):
    async def create(self, image: ImageInput, **options: Unpack[RenderOptions]) -> AsyncRender:
        """As ``Renders.create``: the returned handle's ``wait()``, ``download()`` ... are awaited."""
        created = await self._client._run(ep.create_render(image, options))
        return AsyncRender(self._client, created.render_id, created)

    def attach(self, render_id: str) -> AsyncRender:
        """A handle on an existing render."""
        return AsyncRender(self._client, render_id)

    async def get(self, render_id: str) -> models.RenderStatus:
        return await self._client._run(ep.get_render(render_id))

    async def list(
        self,
        *,
        status: ep.RenderState | None = None,
        project_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> models.RendersPage:
        """One page, newest first (``next_cursor`` fetches the next)."""
        return await self._client._run(ep.list_renders(status, project_id, limit, cursor))

    def iter(
        self, *, status: ep.RenderState | None = None, project_id: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[models.RenderStatus]:
        """Every render (matching the filters), page after page: ``async for render in client.renders.iter()``."""
        return apaginate(lambda cursor: self.list(status=status, project_id=project_id, limit=page_size, cursor=cursor))

    async def cancel(self, render_id: str) -> models.RenderStatus:
        """Cancel a pending or processing render (its credits are returned); ``ConflictError`` once finished."""
        return await self._client._run(ep.cancel_render(render_id))

    async def events(
        self,
        render_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a stream's end, not a cancel)
    ) -> AsyncGenerator[models.RenderStatus]:
        """As ``Renders.events``: ``async for status in client.renders.events(render_id)``."""
        reader = StatusReader(timeout)
        response = await self._client._run(ep.render_events(render_id, reader.window.read_timeout()))
        try:
            async for line in response.aiter_lines():
                if (status := reader.feed(line)) is not None:
                    yield status
                if reader.done:
                    return
        except httpx.TransportError as exc:
            if error := reader.failure(exc):
                raise error from exc
        finally:
            await response.aclose()

    async def read_output(self, url: str) -> bytes:
        """The bytes behind a render's signed ``output_url`` (absolute, or relative to the gateway)."""
        return await self._client._run(ep.download(url))


class AsyncRender(RenderHandle):
    """A submitted render: ``await wait()`` for its final status, then ``download(path)`` or ``read()`` its PNG."""

    def __init__(self, client: AsyncClient, render_id: str, created: models.RenderCreated | None = None) -> None:
        super().__init__(render_id, created)
        self._renders = client.renders

    async def refresh(self) -> models.RenderStatus:
        return self._remember(await self._renders.get(self.id))

    async def cancel(self) -> models.RenderStatus:
        return self._remember(await self._renders.cancel(self.id))

    async def events(self, *, timeout: float | None = None) -> AsyncGenerator[models.RenderStatus]:  # noqa: ASYNC109
        async with aclosing(self._renders.events(self.id, timeout=timeout)) as stream:
            async for status in stream:
                yield self._remember(status)

    async def wait(
        self,
        timeout: float = 600.0,  # noqa: ASYNC109 (the SDK's documented deadline, the same as Render.wait)
        poll_interval: float = 1.0,
        follow: Follow = "sse",
        *,
        on_status: Callable[[models.RenderStatus], object] | None = None,
    ) -> models.RenderStatus:
        """The final status, as ``Render.wait`` finds it: the event stream, else polling; ``RenderTimeoutError``."""
        plan = WaitPlan(self.id, timeout, poll_interval, follow, on_status)
        if plan.streaming:
            try:
                async with aclosing(self.events(timeout=plan.remaining())) as stream:
                    async for status in stream:
                        if plan.finished(status):
                            return status
            except STREAM_FAILURES:
                pass
        while True:
            status = await self.refresh()
            if plan.finished(status):
                return status
            await asyncio.sleep(plan.next_poll())

    async def read(self) -> bytes:
        """The output image; ``RenderNotCompletedError`` unless the render completed."""
        return await self._renders.read_output(output_url(self._completed_status() or await self.refresh()))

    async def download(self, path: str | os.PathLike[str]) -> Path:
        """Write the output image to ``path`` (parent folders are created)."""
        content = await self.read()
        return await asyncio.to_thread(write_output, path, content)


class AsyncProjects(Resource[AsyncClient]):
    async def list(
        self, *, platform: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> models.ProjectsPage:
        return await self._client._run(ep.list_projects(platform, limit, offset))

    async def create(self, name: str, description: str | None = None, platform: str | None = None) -> models.Project:
        return await self._client._run(ep.create_project(name, description, platform))

    async def get(self, project_id: str) -> models.Project:
        return await self._client._run(ep.get_project(project_id))

    async def delete(self, project_id: str) -> None:
        await self._client._run(ep.delete_project(project_id))


class AsyncCreditsResource(Resource[AsyncClient]):
    async def get(self) -> models.Credits:
        return await self._client._run(ep.get_credits())

    async def transactions(self, *, limit: int | None = None, cursor: str | None = None) -> models.TransactionsPage:
        """One page of the ledger, newest first."""
        return await self._client._run(ep.list_transactions(limit, cursor))

    def iter_transactions(self, *, page_size: int | None = None) -> AsyncIterator[models.Transaction]:
        return apaginate(lambda cursor: self.transactions(limit=page_size, cursor=cursor))


class AsyncWebhooks(Resource[AsyncClient]):
    """Webhook endpoints (scope ``webhook:write``); verify what they receive with ``renderiq.verify_webhook``."""

    async def register(
        self, url: str, events: builtins.list[str], *, secret: str | None = None, description: str | None = None
    ) -> models.CreatedWebhook:
        return await self._client._run(ep.register_webhook(url, events, secret, description))

    async def list(self) -> builtins.list[models.Webhook]:
        return await self._client._run(ep.list_webhooks())

    async def delete(self, webhook_id: str) -> None:
        await self._client._run(ep.delete_webhook(webhook_id))

    async def test(self, webhook_id: str) -> models.DeliveryRef:
        """Queue a ``webhook.test`` delivery to the endpoint."""
        return await self._client._run(ep.test_webhook(webhook_id))

    async def enable(self, webhook_id: str) -> models.Webhook:
        return await self._client._run(ep.enable_webhook(webhook_id))

    async def deliveries(
        self, webhook_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> models.DeliveriesPage:
        return await self._client._run(ep.list_deliveries(webhook_id, limit, cursor))

    def iter_deliveries(self, webhook_id: str, *, page_size: int | None = None) -> AsyncIterator[models.Delivery]:
        return apaginate(lambda cursor: self.deliveries(webhook_id, limit=page_size, cursor=cursor))

    async def resend(self, webhook_id: str, delivery_id: str) -> models.DeliveryRef:
        return await self._client._run(ep.resend_delivery(webhook_id, delivery_id))

    async def callback_secret(self) -> str:
        """The secret that signs deliveries to a render's ``callback_url``."""
        return await self._client._run(ep.callback_secret())


__all__ = [
    "AsyncAuth",
    "AsyncClient",
    "AsyncCreditsResource",
    "AsyncKeys",
    "AsyncProjects",
    "AsyncRender",
    "AsyncRenders",
    "AsyncWebhooks",
    "apaginate",
]
