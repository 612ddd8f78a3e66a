"""The SDK's transport against a real local HTTP server scripted per route: retries of 429/503 and of connection
failures, ``Retry-After`` (seconds and HTTP date) honoured, ``Idempotency-Key`` reused across a create's retries,
giving up after ``max_retries``, error mapping, token refresh, identity headers, downloads and the SSE fallback.

The server (``http.server`` in a thread) records every request with its arrival time; the gaps asserted between
attempts are lower bounds set by ``Retry-After`` (correctness), never performance thresholds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import renderiq
from renderiq import AsyncClient, Client, RetryPolicy

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
FAST = RetryPolicy(max_retries=3, initial_backoff=0.01, max_backoff=0.05)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None
    """JSON-able (sent as JSON) or bytes (sent as they are)."""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float
    """``time.monotonic()`` when the request arrived."""


Responder = Reply | Callable[[Seen], Reply]


def ok(data: Any, status: int = 200) -> Reply:
    return Reply(status, {"success": True, "data": data})


def refusal(
    status: int, code: str, headers: dict[str, str] | None = None, details: dict[str, Any] | None = None, **extra: Any
) -> Reply:
    body = {"success": False, "error": f"refused: {code}", "errorCode": code, "details": details or {}, **extra}
    return Reply(status, body, {"X-Request-Id": f"req-{code.lower()}", **(headers or {})})


class ScriptedServer:
    """Answers each ``(method, path)`` from its script in order, then with its last entry for ever."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[tuple[str, str], deque[Responder]] = {}
        self.seen: list[Seen] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                owner._answer(self)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"

    def script(self, method: str, path: str, *replies: Responder) -> None:
        with self._lock:
            self._scripts[(method, path)] = deque(replies)

    def requests(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if path is None or s.path == path]

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        parts = urlsplit(handler.path)
        seen = Seen(
            handler.command,
            parts.path,
            parts.query,
            {k.lower(): v for k, v in handler.headers.items()},
            handler.rfile.read(length),
            time.monotonic(),
        )
        with self._lock:
            self.seen.append(seen)
            script = self._scripts.get((seen.method, seen.path))
            responder: Responder = refusal(404, "NOT_FOUND")
            if script:
                responder = script.popleft() if len(script) > 1 else script[0]
        reply = responder(seen) if callable(responder) else responder
        body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        handler.send_response(reply.status)
        content_type = "application/octet-stream" if isinstance(reply.body, bytes) else "application/json"
        for name, value in {"Content-Type": content_type, **reply.headers}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def __enter__(self) -> ScriptedServer:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as running:
        yield running


def gaps(seen: list[Seen]) -> list[float]:
    return [later.at - earlier.at for earlier, later in itertools.pairwise(seen)]


def render_status(render_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "renderId": render_id,
        "status": status,
        "progress": 100 if status == "completed" else 0,
        "creditsUsed": 0,
        "quality": "standard",
        "aspectRatio": "16:9",
        "style": "photorealistic",
        "model": "local",
        "platform": "sketchup",
        "createdAt": "2026-01-01T00:00:00Z",
        **extra,
    }


NOW = "2026-01-01T00:00:00Z"
CREATED = ok({"renderId": "r-1", "status": "pending", "creditsCost": 5, "estimatedTime": 3}, 202)


# -- 429 / 503 and Retry-After -------------------------------------------------------------------------------------


def test_render_create_retries_429_honouring_retry_after_with_one_idempotency_key(server: ScriptedServer) -> None:
    limited = refusal(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "1"})
    server.script("POST", "/api/plugins/renders", limited, limited, CREATED)
    with Client(server.url, api_key="rk_live_test", retry=FAST) as client:
        render = client.renders.create(PNG, quality="standard")
    assert render.id == "r-1"
    attempts = server.requests("/api/plugins/renders")
    assert len(attempts) == 3
    keys = {a.headers["idempotency-key"] for a in attempts}
    assert len(keys) == 1, "every retry of one create carries the same Idempotency-Key"
    assert uuid.UUID(keys.pop()).version == 4
    assert all(gap >= 1.0 for gap in gaps(attempts)), gaps(attempts)


def test_each_create_gets_its_own_key_and_a_callers_key_is_kept(server: ScriptedServer) -> None:
    server.script("POST", "/api/plugins/renders", CREATED)
    with Client(server.url, api_key="rk_live_test") as client:
        client.renders.create(PNG)
        client.renders.create(PNG)
        client.renders.create(PNG, idempotency_key="view-001")
    keys = [a.headers["idempotency-key"] for a in server.requests("/api/plugins/renders")]
    assert keys[0] != keys[1]
    assert keys[2] == "view-001"


def test_retry_after_as_an_http_date_is_honoured(server: ScriptedServer) -> None:
    def limited_for_three_seconds(_: Seen) -> Reply:
        return refusal(503, "SERVICE_UNAVAILABLE", {"Retry-After": formatdate(time.time() + 3, usegmt=True)})

    server.script("GET", "/api/plugins/credits", limited_for_three_seconds, ok({"balance": 7}))
    with Client(server.url, api_key="rk_live_test", retry=FAST) as client:
        assert client.credits.get().balance == 7
    attempts = server.requests("/api/plugins/credits")
    assert len(attempts) == 2
    assert gaps(attempts)[0] >= 1.5, "an HTTP date three seconds ahead, in whole seconds, is over two seconds away"


def test_gives_up_after_max_retries_with_rate_limit_error(server: ScriptedServer) -> None:
    server.script("GET", "/api/plugins/auth/me", refusal(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "0"}))
    with (
        Client(server.url, api_key="rk_live_test", max_retries=2) as client,
        pytest.raises(renderiq.RateLimitError) as caught,
    ):
        client.auth.me()
    assert len(server.requests("/api/plugins/auth/me")) == 3, "the first attempt and max_retries=2 retries"
    error = caught.value
    assert error.status_code == 429
    assert error.error_code == "RATE_LIMIT_EXCEEDED"
    assert error.retry_after == 0
    assert error.request_id == "req-rate_limit_exceeded"


def test_a_retry_after_beyond_the_cap_is_raised_at_once(server: ScriptedServer) -> None:
    server.script("GET", "/api/plugins/credits", refusal(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "120"}))
    with Client(server.url, api_key="rk_live_test") as client, pytest.raises(renderiq.RateLimitError) as caught:
        client.credits.get()
    assert len(server.requests()) == 1
    assert caught.value.retry_after == 120


def test_503_without_retry_after_backs_off_and_500_is_not_retried(server: ScriptedServer) -> None:
    server.script("GET", "/api/plugins/credits", refusal(503, "SERVICE_UNAVAILABLE"), ok({"balance": 3}))
    server.script("GET", "/api/plugins/auth/me", refusal(500, "INTERNAL_ERROR"))
    with Client(server.url, api_key="rk_live_test", retry=FAST) as client:
        assert client.credits.get().balance == 3
        with pytest.raises(renderiq.ServerError) as caught:
            client.auth.me()
    assert len(server.requests("/api/plugins/credits")) == 2
    assert len(server.requests("/api/plugins/auth/me")) == 1
    assert caught.value.error_code == "INTERNAL_ERROR"


def test_no_retries_when_disabled(server: ScriptedServer) -> None:
    server.script("GET", "/api/plugins/credits", refusal(503, "SERVICE_UNAVAILABLE", {"Retry-After": "0"}))
    with (
        Client(server.url, api_key="rk_live_test", max_retries=0) as client,
        pytest.raises(renderiq.ServiceUnavailableError),
    ):
        client.credits.get()
    assert len(server.requests()) == 1


async def test_async_client_retries_with_the_same_key_and_honours_retry_after(server: ScriptedServer) -> None:
    server.script("POST", "/api/plugins/renders", refusal(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "1"}), CREATED)
    async with AsyncClient(server.url, api_key="rk_live_test", retry=FAST) as client:
        render = await client.renders.create(PNG)
    assert render.id == "r-1"
    attempts = server.requests("/api/plugins/renders")
    assert len(attempts) == 2
    assert attempts[0].headers["idempotency-key"] == attempts[1].headers["idempotency-key"]
    assert gaps(attempts)[0] >= 1.0


async def test_async_client_gives_up_after_max_retries(server: ScriptedServer) -> None:
    server.script("GET", "/api/plugins/credits", refusal(429, "RATE_LIMIT_EXCEEDED", {"Retry-After": "0"}))
    async with AsyncClient(server.url, api_key="rk_live_test", max_retries=1) as client:
        with pytest.raises(renderiq.RateLimitError):
            await client.credits.get()
    assert len(server.requests()) == 2


# -- connection failures --------------------------------------------------------------------------------------------


class HangUpServer:
    """Accepts connections and closes them at once, counting them: every request fails without an answer."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            conn.recv(65536)
            conn.close()

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def hang_up() -> Iterator[HangUpServer]:
    server = HangUpServer()
    yield server
    server.close()


def test_connection_failures_are_retried_only_when_safe(hang_up: HangUpServer) -> None:
    with Client(hang_up.url, api_key="rk_live_test", retry=FAST) as client:
        with pytest.raises(renderiq.APIConnectionError) as read:
            client.credits.get()
        assert hang_up.connections == 4, "a read is safe to repeat: 1 attempt + 3 retries"
        assert read.value.error_code == "CONNECTION_ERROR"
        assert read.value.status_code is None

        with pytest.raises(renderiq.APIConnectionError):
            client.auth.signin("ada@example.com", "pw")
        assert hang_up.connections == 5, "a sign-in may have been processed: never sent twice"

        with pytest.raises(renderiq.APIConnectionError):
            client.renders.create(PNG)
        assert hang_up.connections == 9, "a create carries an Idempotency-Key: safe to repeat"


def test_refused_connection_is_a_connection_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", retry=FAST) as client, pytest.raises(renderiq.APIConnectionError):
        client.health()


# -- error mapping --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "kind", "code"),
    [
        (refusal(401, "INVALID_CREDENTIALS"), renderiq.AuthenticationError, "INVALID_CREDENTIALS"),
        (refusal(401, "API_KEY_REVOKED"), renderiq.AuthenticationError, "API_KEY_REVOKED"),
        (refusal(403, "INSUFFICIENT_PERMISSIONS"), renderiq.PermissionDeniedError, "INSUFFICIENT_PERMISSIONS"),
        (refusal(404, "NOT_FOUND"), renderiq.NotFoundError, "NOT_FOUND"),
        (refusal(409, "INVALID_STATE"), renderiq.ConflictError, "INVALID_STATE"),
        (refusal(422, "IDEMPOTENCY_CONFLICT"), renderiq.IdempotencyConflictError, "IDEMPOTENCY_CONFLICT"),
        (refusal(400, "INVALID_IMAGE"), renderiq.ValidationError, "INVALID_IMAGE"),
        (refusal(413, "PAYLOAD_TOO_LARGE"), renderiq.PayloadTooLargeError, "PAYLOAD_TOO_LARGE"),
        (refusal(400, "SOMETHING_NEW"), renderiq.ValidationError, "SOMETHING_NEW"),
        (refusal(418, "TEAPOT"), renderiq.RenderiqError, "TEAPOT"),
        (Reply(502, b"<html>bad gateway</html>"), renderiq.ServerError, "INTERNAL_ERROR"),
    ],
)
def test_errors_are_mapped_by_code_then_status(
    server: ScriptedServer, reply: Reply, kind: type[renderiq.RenderiqError], code: str
) -> None:
    server.script("GET", "/api/plugins/projects/p-1", reply)
    with Client(server.url, api_key="rk_live_test", max_retries=0) as client, pytest.raises(kind) as caught:
        client.projects.get("p-1")
    assert type(caught.value) is kind
    assert caught.value.error_code == code
    assert caught.value.status_code == reply.status
    assert caught.value.message


def test_error_fields_carry_the_contracts_details(server: ScriptedServer) -> None:
    server.script(
        "POST",
        "/api/plugins/renders",
        refusal(402, "INSUFFICIENT_CREDITS", requiredCredits=15, availableCredits=10),
    )
    scope = refusal(403, "INSUFFICIENT_PERMISSIONS", details={"requiredScope": "webhook:write"})
    server.script("GET", "/api/plugins/webhooks", scope)
    invalid_input = refusal(400, "INVALID_INPUT", details={"field": "quality", "reason": "unknown"})
    server.script("POST", "/api/plugins/projects", invalid_input)
    with Client(server.url, api_key="rk_live_test") as client:
        with pytest.raises(renderiq.InsufficientCreditsError) as credits:
            client.renders.create(PNG, quality="ultra")
        with pytest.raises(renderiq.PermissionDeniedError) as permission:
            client.webhooks.list()
        with pytest.raises(renderiq.ValidationError) as invalid:
            client.projects.create("x")
    assert (credits.value.required_credits, credits.value.available_credits) == (15, 10)
    assert credits.value.request_id == "req-insufficient_credits"
    assert permission.value.required_scope == "webhook:write"
    assert (invalid.value.field, invalid.value.reason) == ("quality", "unknown")
    assert "INVALID_INPUT" in str(invalid.value)


# -- identity headers, token refresh, downloads, event-stream fallback ----------------------------------------------


def test_identity_and_credential_headers(server: ScriptedServer) -> None:
    server.script("GET", "/api/plugins/credits", ok({"balance": 1}))
    with Client(server.url, api_key="rk_live_k", platform="sketchup", plugin_version="1.4.2") as client:
        client.credits.get()
        client.use_tokens("access-1")
        client.credits.get()
    first, second = server.requests()
    assert first.headers["user-agent"] == f"Renderiq-Plugin/SketchUp/1.4.2 renderiq-python/{renderiq.__version__}"
    assert first.headers["x-plugin-platform"] == "sketchup"
    assert first.headers["x-plugin-version"] == "1.4.2"
    assert first.headers["x-api-key"] == "rk_live_k"
    assert "authorization" not in first.headers
    assert second.headers["authorization"] == "Bearer access-1"
    assert "x-api-key" not in second.headers, "a held access token alone decides"


def tokens(n: int) -> dict[str, Any]:
    pair = {"access_token": f"access-{n}", "refresh_token": f"refresh-{n}", "expires_at": "2026-01-01T01:00:00Z"}
    return {"success": True, "token_type": "Bearer", **pair}


def test_an_expired_access_token_is_refreshed_once_and_the_request_repeated(server: ScriptedServer) -> None:
    def me(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != "Bearer access-2":
            return refusal(401, "TOKEN_EXPIRED")
        user = {"id": "u-1", "email": "ada@example.com", "name": None, "created_at": "2026-01-01T00:00:00Z"}
        return Reply(200, {"success": True, "user": user})

    server.script("GET", "/api/plugins/auth/me", me)
    server.script("POST", "/api/plugins/auth/refresh", Reply(200, tokens(2)))
    renewed: list[str] = []

    def remember(pair: renderiq.TokenPair) -> None:
        renewed.append(pair.access_token)

    with Client(server.url, access_token="access-1", refresh_token="refresh-1", on_token_refresh=remember) as client:
        assert client.auth.me().email == "ada@example.com"
        assert client.credentials.refresh_token == "refresh-2"
    assert renewed == ["access-2"]
    assert json.loads(server.requests("/api/plugins/auth/refresh")[0].body) == {"refresh_token": "refresh-1"}
    assert len(server.requests("/api/plugins/auth/me")) == 2


async def test_calls_meeting_an_expiry_together_share_one_refresh(server: ScriptedServer) -> None:
    """Presenting a refresh token twice makes the server revoke its family: one refresh, whoever needs it."""

    def credits(seen: Seen) -> Reply:
        time.sleep(0.05)  # all the calls are in flight before the first expiry comes back
        if seen.headers.get("authorization") != "Bearer access-2":
            return refusal(401, "TOKEN_EXPIRED")
        return ok({"balance": 3})

    def refresh(_: Seen) -> Reply:
        time.sleep(0.2)  # the others meet the expiry while this refresh is under way
        return Reply(200, tokens(2))

    server.script("GET", "/api/plugins/credits", credits)
    server.script("POST", "/api/plugins/auth/refresh", refresh)
    async with AsyncClient(server.url, access_token="access-1", refresh_token="refresh-1") as client:
        balances = await asyncio.gather(*(client.credits.get() for _ in range(4)))
    assert [b.balance for b in balances] == [3, 3, 3, 3]
    assert len(server.requests("/api/plugins/auth/refresh")) == 1


def test_a_503_repeats_only_what_cannot_be_done_twice(server: ScriptedServer) -> None:
    """The gateway's 503 can come after the service did the work: a key create is not sent again, a read is."""
    unavailable = refusal(503, "SERVICE_UNAVAILABLE")
    server.script("POST", "/api/plugins/keys", unavailable)
    server.script("DELETE", "/api/plugins/keys/k-1", unavailable)
    server.script("GET", "/api/plugins/credits", unavailable, ok({"balance": 1}))
    with Client(server.url, access_token="a", retry=FAST) as client:
        with pytest.raises(renderiq.ServiceUnavailableError):
            client.keys.create("k", ["renders:read"])
        with pytest.raises(renderiq.ServiceUnavailableError):
            client.keys.delete("k-1")
        assert client.credits.get().balance == 1
    assert len(server.requests("/api/plugins/keys")) == 1
    assert len(server.requests("/api/plugins/keys/k-1")) == 1
    assert len(server.requests("/api/plugins/credits")) == 2


def test_a_failed_signout_keeps_the_tokens(server: ScriptedServer) -> None:
    server.script("POST", "/api/plugins/auth/signout", refusal(500, "INTERNAL_ERROR"), Reply(200, {"success": True}))
    with Client(server.url, access_token="a", refresh_token="r", retry=FAST) as client:
        with pytest.raises(renderiq.ServerError):
            client.auth.signout()
        assert client.credentials.refresh_token == "r", "still valid on the server: not forgotten"
        client.auth.signout()
        assert client.credentials.refresh_token is None


def test_secrets_stay_out_of_reprs() -> None:
    pair = renderiq.TokenPair.model_validate(tokens(7))
    key = renderiq.CreatedApiKey.model_validate(
        {"id": "k", "name": "n", "key": "rk_live_SECRET", "keyPrefix": "rk_live_S", "scopes": [], "createdAt": NOW}
    )
    hook = renderiq.CreatedWebhook.model_validate(
        {"webhookId": "w", "url": "https://x.example", "secret": "whsec_SECRET", "events": ["*"], "createdAt": NOW}
    )
    shown = repr(pair) + repr(key) + repr(hook) + str(pair) + str(key) + str(hook)
    assert "access-7" not in shown
    assert "refresh-7" not in shown
    assert "SECRET" not in shown


def test_an_answer_not_in_the_documented_shape_is_an_sdk_error(server: ScriptedServer) -> None:
    server.script("GET", "/api/plugins/credits", Reply(200, {"unexpected": True}, {"X-Request-Id": "req-odd"}))
    with Client(server.url, api_key="rk_live_test") as client, pytest.raises(renderiq.RenderiqError) as caught:
        client.credits.get()
    assert caught.value.request_id == "req-odd"
    assert caught.value.status_code == 200


def test_a_failed_refresh_raises_the_original_expiry(server: ScriptedServer) -> None:
    server.script("GET", "/api/plugins/auth/me", refusal(401, "TOKEN_EXPIRED"))
    server.script("POST", "/api/plugins/auth/refresh", refusal(401, "REFRESH_FAILED"))
    with (
        Client(server.url, access_token="a", refresh_token="r") as client,
        pytest.raises(renderiq.AuthenticationError) as caught,
    ):
        client.auth.me()
    assert caught.value.error_code == "TOKEN_EXPIRED"
    assert isinstance(caught.value.__cause__, renderiq.AuthenticationError)
    assert caught.value.__cause__.error_code == "REFRESH_FAILED"
    assert len(server.requests("/api/plugins/auth/refresh")) == 1


@pytest.mark.parametrize("absolute", [True, False])
def test_download_follows_relative_and_absolute_output_urls_without_credentials(
    server: ScriptedServer, tmp_path: Path, absolute: bool
) -> None:
    output = ("" if not absolute else server.url) + "/files/out.png?expires=1&signature=s"
    server.script("GET", "/api/plugins/renders/r-1", ok(render_status("r-1", "completed", outputUrl=output)))
    server.script("GET", "/files/out.png", Reply(200, PNG))
    with Client(server.url, api_key="rk_live_k") as client:
        path = client.renders.attach("r-1").download(tmp_path / "deep" / "out.png")
    assert path.read_bytes() == PNG
    fetched = server.requests("/files/out.png")[0]
    assert fetched.query == "expires=1&signature=s"
    assert "x-api-key" not in fetched.headers, "a signed URL is fetched without credentials"


def test_download_of_a_failed_render_raises(server: ScriptedServer) -> None:
    failed = render_status("r-1", "failed", error="provider refused", errorCode="PROVIDER_REJECTED")
    server.script("GET", "/api/plugins/renders/r-1", ok(failed))
    with Client(server.url, api_key="rk_live_k") as client, pytest.raises(renderiq.RenderNotCompletedError) as caught:
        client.renders.attach("r-1").read()
    assert caught.value.error_code == "PROVIDER_REJECTED"
    assert caught.value.status.status == "failed"


def sse(*statuses: dict[str, Any]) -> bytes:
    return b"".join(b": keep-alive\n\ndata: " + json.dumps(s).encode() + b"\n\n" for s in statuses)


@pytest.mark.parametrize(
    "stream",
    [
        Reply(200, sse(render_status("r-1", "pending")), {"Content-Type": "text/event-stream"}),
        refusal(503, "SERVICE_UNAVAILABLE"),
    ],
    ids=["ends-early", "fails"],
)
def test_wait_falls_back_to_polling_when_the_stream_ends_early_or_fails(server: ScriptedServer, stream: Reply) -> None:
    server.script("GET", "/api/plugins/renders/r-1/events", stream)
    server.script(
        "GET",
        "/api/plugins/renders/r-1",
        ok(render_status("r-1", "processing")),
        ok(render_status("r-1", "completed", outputUrl="/files/x")),
    )
    with Client(server.url, api_key="rk_live_k", retry=FAST) as client:
        final = client.renders.attach("r-1").wait(timeout=30, poll_interval=0.05)
    assert final.status == "completed"
    assert len(server.requests("/api/plugins/renders/r-1")) == 2


def test_wait_follows_the_stream_to_its_final_status(server: ScriptedServer) -> None:
    events = sse(render_status("r-1", "pending"), render_status("r-1", "completed", outputUrl="/files/x"))
    server.script("GET", "/api/plugins/renders/r-1/events", Reply(200, events, {"Content-Type": "text/event-stream"}))
    with Client(server.url, api_key="rk_live_k") as client:
        render = client.renders.attach("r-1")
        assert render.wait(timeout=30).status == "completed"
    assert server.requests("/api/plugins/renders/r-1") == [], "no polling while the stream works"
    assert server.requests("/api/plugins/renders/r-1/events")[0].headers["accept"] == "text/event-stream"
    assert render.status is not None
    assert render.status.output_url == "/files/x"


def test_wait_times_out_with_the_last_status(server: ScriptedServer) -> None:
    server.script("GET", "/api/plugins/renders/r-1", ok(render_status("r-1", "processing")))
    with Client(server.url, api_key="rk_live_k") as client, pytest.raises(renderiq.RenderTimeoutError) as caught:
        client.renders.attach("r-1").wait(timeout=0.3, poll_interval=0.05, follow="poll")
    assert caught.value.error_code == "WAIT_TIMEOUT"
    assert caught.value.status is not None
    assert caught.value.status.status == "processing"


async def test_async_wait_falls_back_to_polling(server: ScriptedServer) -> None:
    server.script("GET", "/api/plugins/renders/r-1/events", Reply(200, sse(render_status("r-1", "pending"))))
    server.script("GET", "/api/plugins/renders/r-1", ok(render_status("r-1", "canceled")))
    async with AsyncClient(server.url, api_key="rk_live_k") as client:
        final = await client.renders.attach("r-1").wait(timeout=30, poll_interval=0.05)
    assert final.status == "canceled"
