"""The protocol engine shared by both clients, free of I/O: it builds requests and decides, from each outcome, to
return, raise, refresh the access token, or wait and try again. A transport only performs its ``Send``/``Sleep``
steps (``Client`` with blocking calls, ``AsyncClient`` with awaits)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from renderiq import _endpoints
from renderiq._call import Call
from renderiq._version import __version__
from renderiq.errors import AuthenticationError, RenderiqError, connection_error, error_from_response
from renderiq.models import TokenPair
from renderiq.retries import RetryPolicy, parse_retry_after

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
REFRESH_WAIT = 30.0
"""How long a call waits for another's token refresh before trying its own (the other may have been abandoned)."""
PLATFORM_NAMES = {
    "sketchup": "SketchUp",
    "revit": "Revit",
    "autocad": "AutoCAD",
    "rhino": "Rhino",
    "archicad": "ArchiCAD",
    "blender": "Blender",
}


@dataclass(frozen=True)
class Send:
    request: httpx.Request
    stream: bool


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Send | Sleep
Outcome = httpx.Response | httpx.TransportError | None
"""What a transport sends back into the flow: the response or the transport error of a ``Send``; None after a sleep."""
Flow = Generator[Step, Outcome, T]


class Run(Generic[T]):
    """One call's flow as a transport drives it: ``advance`` gives each step, then None once ``result`` is set."""

    result: T

    def __init__(self, flow: Flow[T]) -> None:
        self._flow = flow

    def advance(self, outcome: Outcome) -> Step | None:
        """Hand in the outcome of the previous step (None at first and after a sleep); the next step or None."""
        try:
            return self._flow.send(outcome)
        except StopIteration as done:
            self.result = done.value
            return None


@dataclass
class Credentials:
    """What the client authenticates with: the access token when it has one (it alone decides), else the API key."""

    api_key: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        if self.access_token:
            return {"Authorization": f"Bearer {self.access_token}"}
        if self.api_key:
            return {"X-Api-Key": self.api_key}
        return {}


def identity_headers(platform: str | None, plugin_version: str | None) -> dict[str, str]:
    """``User-Agent`` (``Renderiq-Plugin/SketchUp/1.4.2 renderiq-python/0.1.0``) and the plugin identity headers."""
    sdk = f"renderiq-python/{__version__}"
    if not platform:
        return {"User-Agent": sdk}
    key = platform.strip().lower()
    plugin = "/".join(["Renderiq-Plugin", PLATFORM_NAMES.get(key, platform.strip()), *filter(None, [plugin_version])])
    headers = {"User-Agent": f"{plugin} {sdk}", "X-Plugin-Platform": key}
    if plugin_version:
        headers["X-Plugin-Version"] = plugin_version
    return headers


class ClientCore:
    """Configuration, credentials and the request flow of one client."""

    def __init__(
        self,
        base_url: str | None,
        credentials: Credentials,
        *,
        platform: str | None,
        plugin_version: str | None,
        timeout: float | httpx.Timeout,
        retry: RetryPolicy,
        auto_refresh: bool,
        on_token_refresh: Callable[[TokenPair], None] | None,
    ) -> None:
        root = (base_url or os.environ.get("RENDERIQ_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.base_url = root.removesuffix(_endpoints.API)
        self.credentials = credentials
        self.identity = identity_headers(platform, plugin_version)
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.retry = retry
        self.auto_refresh = auto_refresh
        self.on_token_refresh = on_token_refresh
        self._refresh_state = threading.Lock()  # held only to check and claim, never across a request
        self._refreshing_since: float | None = None

    def url(self, path: str) -> str:
        return path if "://" in path else self.base_url + path

    def request(self, call: Call[Any]) -> httpx.Request:
        headers = {"Accept": "application/json", **self.identity}
        if call.authenticated:
            headers.update(self.credentials.headers())
        headers.update(call.headers)
        timeout = self.timeout
        if call.read_timeout is not None:
            timeout = httpx.Timeout(
                connect=self.timeout.connect, read=call.read_timeout, write=self.timeout.write, pool=self.timeout.pool
            )
        return httpx.Request(
            call.method,
            self.url(call.path),
            params=call.params,
            json=call.json,
            data=call.data,
            files=call.files,
            headers=headers,
            extensions={"timeout": timeout.as_dict()},
        )

    def store_tokens(self, tokens: TokenPair) -> None:
        self.credentials.access_token = tokens.access_token
        self.credentials.refresh_token = tokens.refresh_token

    def start(self, call: Call[T]) -> Run[T]:
        return Run(self.flow(call))

    def flow(self, call: Call[T]) -> Flow[T]:
        """Send ``call`` until it succeeds, fails for good, or its retries run out."""
        retry_number = 0
        refreshed = False
        while True:
            sent_with = self.credentials.access_token
            outcome = yield Send(self.request(call), call.stream)
            if isinstance(outcome, httpx.TransportError):
                repeatable = call.safe_to_repeat or isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout)
                delay = self.retry.delay(retry_number, None) if call.retry and repeatable else None
                if delay is None:
                    raise connection_error(outcome) from outcome
            else:
                assert outcome is not None, "a Send step is answered with its outcome"
                if outcome.is_success or outcome.status_code in call.accept:
                    return self._parsed(call, outcome)
                error = error_from_response(outcome)
                if not refreshed and self._refreshable(call, error):
                    refreshed = True
                    yield from self._refresh_once(error, sent_with)
                    continue
                # A 429 was refused before any work; a 503 may come after the service did the work (the gateway
                # lost its answer), so it is repeated only when repeating cannot do the work twice.
                status = outcome.status_code
                retryable = (
                    call.retry and status in self.retry.retry_statuses and (status == 429 or call.safe_to_repeat)
                )
                delay = self.retry.delay(retry_number, parse_retry_after(outcome.headers)) if retryable else None
                if delay is None:
                    raise error
            yield Sleep(delay)
            retry_number += 1

    @staticmethod
    def _parsed(call: Call[T], response: httpx.Response) -> T:
        try:
            return call.parse(response)
        except (ValueError, KeyError, TypeError) as exc:  # not JSON, or not the documented shape
            raise RenderiqError(
                f"Unexpected answer to {call.method} {call.path}: {exc}",
                status_code=response.status_code,
                request_id=response.headers.get("x-request-id"),
            ) from exc

    def _refreshable(self, call: Call[Any], error: RenderiqError) -> bool:
        held = self.credentials.access_token and self.credentials.refresh_token
        return bool(self.auto_refresh and held and call.authenticated and error.error_code == "TOKEN_EXPIRED")

    def _refresh_once(self, expired: RenderiqError, sent_with: str | None) -> Generator[Step, Outcome, None]:
        """One refresh for every call that met the expiry at the same time: presenting a refresh token twice
        makes the server revoke its whole family. The others wait for it and go on with the new token."""
        while True:
            with self._refresh_state:
                if self.credentials.access_token != sent_with:
                    return  # renewed meanwhile
                idle = self._refreshing_since is None or time.monotonic() - self._refreshing_since > REFRESH_WAIT
                if idle:
                    self._refreshing_since = time.monotonic()
            if idle:
                try:
                    yield from self._refresh(expired)
                finally:
                    self._refreshing_since = None
                return
            yield Sleep(0.05)

    def _refresh(self, expired: RenderiqError) -> Generator[Step, Outcome, None]:
        """Renew the token pair once; when that fails, the original ``TOKEN_EXPIRED`` is the error raised."""
        assert self.credentials.refresh_token is not None
        try:
            tokens = yield from self.flow(_endpoints.refresh(self.credentials.refresh_token))
        except AuthenticationError as exc:
            raise expired from exc
        self.store_tokens(tokens)
        if self.on_token_refresh is not None:
            self.on_token_refresh(tokens)
