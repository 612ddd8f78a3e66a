"""What ``Client`` and ``AsyncClient`` share: construction, credentials, and the render handle's state."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Generic, TypeVar

import httpx

from renderiq._core import ClientCore, Credentials
from renderiq.errors import RenderNotCompletedError
from renderiq.models import AuthResponse, RenderCreated, RenderStatus, TokenPair
from renderiq.retries import RetryPolicy

HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)
TokensT = TypeVar("TokensT", AuthResponse, TokenPair)


class BaseClient(ABC, Generic[HttpT]):
    """Configuration common to both clients (see ``Client`` for the arguments)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
        platform: str | None = None,
        plugin_version: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        auto_refresh: bool = True,
        on_token_refresh: Callable[[TokenPair], None] | None = None,
        http_client: HttpT | None = None,
    ) -> None:
        policy = retry or RetryPolicy()
        if max_retries is not None:
            policy = replace(policy, max_retries=max_retries)
        if api_key is None and access_token is None:
            api_key = os.environ.get("RENDERIQ_API_KEY") or None
        self._core = ClientCore(
            base_url,
            Credentials(api_key, access_token, refresh_token),
            platform=platform,
            plugin_version=plugin_version,
            timeout=timeout,
            retry=policy,
            auto_refresh=auto_refresh,
            on_token_refresh=on_token_refresh,
        )
        self._owns_http = http_client is None
        self._http: HttpT = http_client if http_client is not None else self._new_http()

    @abstractmethod
    def _new_http(self) -> HttpT:
        """The transport's own httpx client, when the caller gave none."""

    @property
    def base_url(self) -> str:
        """The gateway's root URL (``/api/plugins`` is added per request)."""
        return self._core.base_url

    @property
    def credentials(self) -> Credentials:
        return self._core.credentials

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._core.retry

    def use_api_key(self, api_key: str) -> None:
        """Authenticate with ``api_key`` from now on (any held tokens are dropped: a token would take precedence)."""
        self._core.credentials = Credentials(api_key=api_key)

    def use_tokens(self, access_token: str, refresh_token: str | None = None) -> None:
        """Authenticate with this access token (Bearer) from now on; ``refresh_token`` lets it be renewed."""
        self._core.credentials.access_token = access_token
        self._core.credentials.refresh_token = refresh_token

    def _signed_in(self, tokens: TokensT, set_token: bool) -> TokensT:
        if set_token:
            self._core.store_tokens(tokens)
        return tokens

    def _signing_out(self, refresh_token: str | None) -> str:
        """The refresh token to revoke."""
        token = refresh_token or self._core.credentials.refresh_token
        if not token:
            raise ValueError("no refresh token: pass one, or sign in with this client first")
        return token

    def _signed_out(self, token: str) -> None:
        """Once the server revoked it: the client forgets its tokens when they are the ones revoked."""
        held = self._core.credentials
        if token == held.refresh_token:
            held.access_token = held.refresh_token = None

    def _held_refresh_token(self, refresh_token: str | None) -> str:
        token = refresh_token or self._core.credentials.refresh_token
        if not token:
            raise ValueError("no refresh token: pass one, or sign in with this client first")
        return token


class RenderHandle:
    """State of one render as seen by its handle: its id, the create answer and the last status fetched."""

    def __init__(
        self, render_id: str, created: RenderCreated | None = None, status: RenderStatus | None = None
    ) -> None:
        self.id = render_id
        self.created = created
        self.status = status

    def __repr__(self) -> str:
        state = self.status.status if self.status else self.created.status if self.created else "unknown"
        return f"<{type(self).__name__} {self.id} {state}>"

    def _remember(self, status: RenderStatus) -> RenderStatus:
        self.status = status
        return status

    def _completed_status(self) -> RenderStatus | None:
        """The last status when it is completed with an output (else it must be fetched again)."""
        return self.status if self.status is not None and self.status.is_completed else None


def output_url(status: RenderStatus) -> str:
    """The signed URL of a completed render's output; ``RenderNotCompletedError`` when it has none."""
    if not status.is_completed or not status.output_url:
        raise RenderNotCompletedError(status)
    return status.output_url


def write_output(path: str | os.PathLike[str], content: bytes) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    return target


ClientT = TypeVar("ClientT")


class Resource(Generic[ClientT]):
    """A group of endpoints (``client.renders``, ``client.keys``, ...) bound to its client."""

    def __init__(self, client: ClientT) -> None:
        self._client = client
