"""``Client``: the blocking client. Requests and answers are built in ``_endpoints``, retried by ``_core``."""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
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


def paginate(fetch: Callable[[str | None], models.CursorPage[T]]) -> Iterator[T]:
    """Every item of a cursor-paginated list, fetching pages as the iteration reaches them."""
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page.items
        if not page.next_cursor:
            return
        cursor = page.next_cursor


class Client(BaseClient[httpx.Client]):
    """The Renderiq plugin API, blocking.

    ``Client(base_url, api_key=...)`` or ``Client(base_url).auth.signin(email, password)``; ``platform`` and
    ``plugin_version`` identify the calling plugin (``"sketchup"``, ``"1.4.2"``). ``max_retries`` / ``retry`` bound
    the retries of 429, 503 and connection failures; an expired access token is refreshed once when the client
    holds a refresh token (``on_token_refresh`` is told the new pair). Use it as a context manager, or ``close()``.
    """

    def _new_http(self) -> httpx.Client:
        return httpx.Client()

    def _run(self, call: Call[T]) -> T:
        run = self._core.start(call)
        outcome: Outcome = None
        while (step := run.advance(outcome)) is not None:
            outcome = self._perform(step)
        return run.result

    def _perform(self, step: Step) -> Outcome:
        """Sleep, or send: the response (an error's body read even when streaming) or the transport error."""
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        try:
            response = self._http.send(step.request, stream=step.stream)
            if step.stream and not response.is_success:
                try:
                    response.read()
                finally:
                    response.close()
        except httpx.TransportError as exc:
            return exc
        return response

    @cached_property
    def auth(self) -> Auth:
        return Auth(self)

    @cached_property
    def keys(self) -> Keys:
        return Keys(self)

    @cached_property
    def renders(self) -> Renders:
        return Renders(self)

    @cached_property
    def projects(self) -> Projects:
        return Projects(self)

    @cached_property
    def credits(self) -> CreditsResource:
        return CreditsResource(self)

    @cached_property
    def webhooks(self) -> Webhooks:
        return Webhooks(self)

    def health(self) -> models.Health:
        """The platform's health (no credentials needed); ``status`` is ``down`` when it cannot serve."""
        return self._run(ep.health())

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class Auth(Resource[Client]):
    """Accounts and tokens. ``signup``/``signin``/``refresh`` make the client use the new tokens (``set_token``)."""

    def signup(
        self, email: str, password: str, name: str | None = None, *, set_token: bool = True
    ) -> models.AuthResponse:
        return self._client._signed_in(self._client._run(ep.signup(email, password, name)), set_token)

    def signin(self, email: str, password: str, *, set_token: bool = True) -> models.AuthResponse:
        return self._client._signed_in(self._client._run(ep.signin(email, password)), set_token)

    def refresh(self, refresh_token: str | None = None, *, set_token: bool = True) -> models.TokenPair:
        """Renew the token pair (the refresh token is spent: reusing it revokes its whole family)."""
        call = ep.refresh(self._client._held_refresh_token(refresh_token))
        return self._client._signed_in(self._client._run(call), set_token)

    def signout(self, refresh_token: str | None = None) -> None:
        token = self._client._signing_out(refresh_token)
        self._client._run(ep.signout(token))
        self._client._signed_out(token)

    def me(self) -> models.User:
        return self._client._run(ep.me())

    def jwks(self) -> models.Jwks:
        return self._client._run(ep.jwks())


class Keys(Resource[Client]):
    """API keys (managed with an access token only, never with a key)."""

    def create(self, name: str, scopes: builtins.list[str], expires_at: datetime | None = None) -> models.CreatedApiKey:
        return self._client._run(ep.create_key(name, scopes, expires_at))

    def list(self, *, page_size: int | None = None) -> builtins.list[models.ApiKey]:
        """Every key of the account (revoked ones too), newest first, however many pages that takes."""
        return builtins.list(paginate(lambda cursor: self.page(limit=page_size, cursor=cursor)))

    def page(self, *, limit: int | None = None, cursor: str | None = None) -> models.KeysPage:
        """One page, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""
        return self._client._run(ep.list_keys(limit, cursor))

    def delete(self, key_id: str) -> None:
        self._client._run(ep.delete_key(key_id))


class Renders(Resource[Client]):
    def create(self, image: ImageInput, **options: Unpack[RenderOptions]) -> Render:
        """Submit ``image`` (path, bytes or binary file); the returned handle can ``wait()`` and ``download()``."""
        created = self._client._run(ep.create_render(image, options))
        return Render(self._client, created.render_id, created)

    def attach(self, render_id: str) -> Render:
        """A handle on an existing render."""
        return Render(self._client, render_id)

    def get(self, render_id: str) -> models.RenderStatus:
        return self._client._run(ep.get_render(render_id))

    def list(
        self,
        *,
        status: ep.RenderState | None = None,
        project_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> models.RendersPage:
        """One page, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""
        return self._client._run(ep.list_renders(status, project_id, limit, cursor))

    def iter(
        self, *, status: ep.RenderState | None = None, project_id: str | None = None, page_size: int | None = None
    ) -> Iterator[models.RenderStatus]:
        """Every render (matching the filters), page after page."""
        return paginate(lambda cursor: self.list(status=status, project_id=project_id, limit=page_size, cursor=cursor))

    def cancel(self, render_id: str) -> models.RenderStatus:
        """Cancel a pending or processing render (its credits are returned); ``ConflictError`` once finished."""
        return self._client._run(ep.cancel_render(render_id))

    def events(self, render_id: str, *, timeout: float | None = None) -> Generator[models.RenderStatus]:
        """The render's status now, then at every change, until a final state (or ``timeout`` seconds)."""
        reader = StatusReader(timeout)
        response = self._client._run(ep.render_events(render_id, reader.window.read_timeout()))
        try:
            for line in response.iter_lines():
                if (status := reader.feed(line)) is not None:
                    yield status
                if reader.done:
                    return
        except httpx.TransportError as exc:
            if error := reader.failure(exc):
                raise error from exc
        finally:
            response.close()

    def read_output(self, url: str) -> bytes:
        """The bytes behind a render's signed ``output_url`` (absolute, or relative to the gateway)."""
        return self._client._run(ep.download(url))


class Render(RenderHandle):
    """A submitted render: ``wait()`` for its final status, then ``download(path)`` or ``read()`` its PNG."""

    def __init__(self, client: Client, render_id: str, created: models.RenderCreated | None = None) -> None:
        super().__init__(render_id, created)
        self._renders = client.renders

    def refresh(self) -> models.RenderStatus:
        return self._remember(self._renders.get(self.id))

    def cancel(self) -> models.RenderStatus:
        return self._remember(self._renders.cancel(self.id))

    def events(self, *, timeout: float | None = None) -> Generator[models.RenderStatus]:
        with closing(self._renders.events(self.id, timeout=timeout)) as stream:
            for status in stream:
                yield self._remember(status)

    def wait(
        self,
        timeout: float = 600.0,
        poll_interval: float = 1.0,
        follow: Follow = "sse",
        *,
        on_status: Callable[[models.RenderStatus], object] | None = None,
    ) -> models.RenderStatus:
        """The final status (completed, failed or canceled): from the event stream, or by polling when asked or
        when the stream fails or ends early. ``on_status`` sees every status on the way (progress bars);
        ``RenderTimeoutError`` after ``timeout`` seconds."""
        plan = WaitPlan(self.id, timeout, poll_interval, follow, on_status)
        if plan.streaming:
            try:
                with closing(self.events(timeout=plan.remaining())) as stream:
                    for status in stream:
                        if plan.finished(status):
                            return status
            except STREAM_FAILURES:
                pass
        while True:
            status = self.refresh()
            if plan.finished(status):
                return status
            time.sleep(plan.next_poll())

    def read(self) -> bytes:
        """The output image; ``RenderNotCompletedError`` unless the render completed."""
        return self._renders.read_output(output_url(self._completed_status() or self.refresh()))

    def download(self, path: str | os.PathLike[str]) -> Path:
        """Write the output image to ``path`` (parent folders are created)."""
        return write_output(path, self.read())


class Projects(Resource[Client]):
    def list(
        self, *, platform: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> models.ProjectsPage:
        return self._client._run(ep.list_projects(platform, limit, offset))

    def create(self, name: str, description: str | None = None, platform: str | None = None) -> models.Project:
        return self._client._run(ep.create_project(name, description, platform))

    def get(self, project_id: str) -> models.Project:
        return self._client._run(ep.get_project(project_id))

    def delete(self, project_id: str) -> None:
        self._client._run(ep.delete_project(project_id))


class CreditsResource(Resource[Client]):
    def get(self) -> models.Credits:
        return self._client._run(ep.get_credits())

    def transactions(self, *, limit: int | None = None, cursor: str | None = None) -> models.TransactionsPage:
        """One page of the ledger, newest first."""
        return self._client._run(ep.list_transactions(limit, cursor))

    def iter_transactions(self, *, page_size: int | None = None) -> Iterator[models.Transaction]:
        return paginate(lambda cursor: self.transactions(limit=page_size, cursor=cursor))


class Webhooks(Resource[Client]):
    """Webhook endpoints (scope ``webhook:write``); verify what they receive with ``renderiq.verify_webhook``."""

    def register(
        self, url: str, events: builtins.list[str], *, secret: str | None = None, description: str | None = None
    ) -> models.CreatedWebhook:
        return self._client._run(ep.register_webhook(url, events, secret, description))

    def list(self) -> builtins.list[models.Webhook]:
        return self._client._run(ep.list_webhooks())

    def delete(self, webhook_id: str) -> None:
        self._client._run(ep.delete_webhook(webhook_id))

    def test(self, webhook_id: str) -> models.DeliveryRef:
        """Queue a ``webhook.test`` delivery to the endpoint."""
        return self._client._run(ep.test_webhook(webhook_id))

    def enable(self, webhook_id: str) -> models.Webhook:
        return self._client._run(ep.enable_webhook(webhook_id))

    def deliveries(
        self, webhook_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> models.DeliveriesPage:
        return self._client._run(ep.list_deliveries(webhook_id, limit, cursor))

    def iter_deliveries(self, webhook_id: str, *, page_size: int | None = None) -> Iterator[models.Delivery]:
        return paginate(lambda cursor: self.deliveries(webhook_id, limit=page_size, cursor=cursor))

    def resend(self, webhook_id: str, delivery_id: str) -> models.DeliveryRef:
        return self._client._run(ep.resend_delivery(webhook_id, delivery_id))

    def callback_secret(self) -> str:
        """The secret that signs deliveries to a render's ``callback_url``."""
        return self._client._run(ep.callback_secret())


__all__ = ["Auth", "Client", "CreditsResource", "Keys", "Projects", "Render", "Renders", "Webhooks", "paginate"]
