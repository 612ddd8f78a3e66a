"""The gateway in front of real upstreams: routing, header hygiene, identity, streaming, errors, health."""

import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, StreamingResponse

from services.gateway.main import create_app as create_gateway
from shared.engines import EmbeddedKafka, free_port
from shared.identity import IDENTITY_HEADER, verify_identity
from shared.settings import ServiceSettings
from shared.storage import LocalStorage, sign
from shared.testing.fixtures import PluginUser, Stack, gateway_settings
from shared.testing.kafka import wait_until
from shared.testing.servers import serve_in_thread

DEV = ServiceSettings(app_env="dev")


def build_echo(auth_url: str) -> FastAPI:
    """An upstream that reports exactly what reached it (JWKS and key checks go on to the real auth service)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/api/plugins/renders/stream")
    async def stream() -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"data: {i}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/.well-known/jwks.json")
    async def jwks() -> JSONResponse:
        async with httpx.AsyncClient() as client:
            return JSONResponse((await client.get(auth_url + "/.well-known/jwks.json")).json())

    @app.api_route("/{path:path}", methods=["GET", "POST", "DELETE"])
    async def echo(path: str, request: Request) -> JSONResponse:
        body = await request.body()
        token = request.headers.get(IDENTITY_HEADER, "")
        return JSONResponse(
            {
                "path": "/" + path,
                "query": request.url.query,
                "headers": dict(request.headers),
                "identity": verify_identity(token, DEV.identity_public_keys()).model_dump(),
                "bodyLength": len(body),
                "bodySha256": hashlib.sha256(body).hexdigest(),
            },
            headers={"x-upstream": "echo", "connection": "keep-alive"},
        )

    return app


@pytest.fixture(scope="module")
def echo_url(stack: Stack) -> Iterator[str]:
    with serve_in_thread(build_echo(stack.service_urls["auth"])) as url:
        yield url


@pytest.fixture(scope="module")
def echo_gateway(stack: Stack, echo_url: str) -> Iterator[str]:
    """A gateway whose every upstream is the echo server (the last one is a closed port)."""
    upstreams = dict.fromkeys(("auth_url", "renders_url", "credits_url", "webhooks_url", "telemetry_url"), echo_url)
    settings = gateway_settings(stack, **upstreams, render_worker_url=f"http://127.0.0.1:{free_port()}")
    with serve_in_thread(create_gateway(settings)) as url:
        yield url


@pytest.mark.parametrize(
    "path",
    [
        "/api/plugins/auth/signin",
        "/api/plugins/auth/me",
        "/api/plugins/keys",
        "/api/plugins/keys/abc",
        "/api/plugins/renders/r1/events",
        "/api/plugins/projects",
        "/api/plugins/credits/transactions",
        "/api/plugins/webhooks/register",
        "/api/admin/telemetry/summary",
        "/admin",
    ],
)
def test_public_paths_reach_their_service_unchanged(echo_gateway: str, operator: PluginUser, path: str) -> None:
    response = httpx.get(echo_gateway + path + "?limit=5&cursor=a%2Fb", headers=operator.bearer)
    assert response.status_code == 200
    assert response.json()["path"] == path
    assert response.json()["query"] == "limit=5&cursor=a%2Fb"
    assert response.headers["x-upstream"] == "echo"


@pytest.mark.parametrize("path", ["/api/plugins/keysX", "/api/plugins", "/internal/whoami", "/x"])
def test_unrouted_paths_are_not_found_at_the_gateway(echo_gateway: str, path: str) -> None:
    response = httpx.get(echo_gateway + path)
    assert response.status_code == 404
    assert response.json()["errorCode"] == "NOT_FOUND"


def test_spoofed_internal_headers_are_stripped_and_identity_is_the_gateways(
    echo_gateway: str, operator: PluginUser
) -> None:
    forged = {
        **operator.bearer,
        "X-Internal-Identity": "forged.token.value",
        "X-Internal-User": "admin",
        "X-User-Id": "someone-else",
        "X-Auth-Scopes": "renders:create",
        "X-Plugin-Platform": "revit",
        "X-Plugin-Version": "2.1.0",
        "X-Request-Id": "client-req-1",
        "Connection": "keep-alive, X-Custom-Hop",
        "TE": "trailers",
    }
    response = httpx.get(echo_gateway + "/api/plugins/projects", headers=forged)
    seen = response.json()
    headers = seen["headers"]
    for name in ("x-internal-user", "x-user-id", "x-auth-scopes", "te"):
        assert name not in headers
    assert headers[IDENTITY_HEADER] != "forged.token.value"
    identity = seen["identity"]
    assert identity["user_id"] == operator.user_id
    assert identity["auth_method"] == "bearer"
    assert identity["is_operator"] is True
    assert identity["platform"] == "revit"
    assert identity["plugin_version"] == "2.1.0"
    assert headers["x-request-id"] == "client-req-1"
    assert response.headers["x-request-id"] == "client-req-1"


def test_platform_from_user_agent_reaches_the_service(echo_gateway: str, operator: PluginUser) -> None:
    headers = {"User-Agent": "SketchUp/24.0.484", **operator.bearer}
    response = httpx.get(echo_gateway + "/api/plugins/projects", headers=headers)
    assert response.json()["identity"]["platform"] == "sketchup"
    assert response.json()["identity"]["plugin_version"] == "24.0.484"


def test_request_body_is_streamed_through_intact(echo_gateway: str, operator: PluginUser) -> None:
    payload = bytes(range(256)) * 40_000  # ~10 MB

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    response = httpx.post(echo_gateway + "/api/plugins/renders", content=chunks(), timeout=30, headers=operator.bearer)
    assert response.json()["bodyLength"] == len(payload)
    assert response.json()["bodySha256"] == hashlib.sha256(payload).hexdigest()


def test_event_stream_passes_through(echo_gateway: str, operator: PluginUser) -> None:
    with httpx.stream("GET", echo_gateway + "/api/plugins/renders/stream", headers=operator.bearer) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    assert text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_upstream_down_is_service_unavailable(stack: Stack, operator: PluginUser) -> None:
    settings = gateway_settings(stack, credits_url=f"http://127.0.0.1:{free_port()}")
    with serve_in_thread(create_gateway(settings)) as url:
        response = httpx.get(url + "/api/plugins/credits", headers=operator.bearer)
    assert response.status_code == 503
    assert response.json()["errorCode"] == "SERVICE_UNAVAILABLE"
    assert "Traceback" not in response.text


async def test_stack_is_healthy_with_every_check(gateway_client: httpx.AsyncClient) -> None:
    response = await gateway_client.get("/api/plugins/health", headers={"X-Plugin-Platform": "rhino"})
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "healthy"
    assert body["success"] is True
    assert body["api"]["platform"] == "rhino"
    for key in ("api", "authentication", "rendering", "storage", "events", "webhooks", "telemetry", "database"):
        assert body["services"][key] == "healthy"


async def test_services_refuse_calls_that_bypass_the_gateway(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        for url in stack.service_urls.values():
            response = await client.get(url + "/internal/whoami")
            assert response.status_code == 401
            assert response.json()["errorCode"] == "AUTH_REQUIRED"
            assert (await client.get(url + "/health/ready")).status_code == 200
            assert "plugin_http_requests_total" in (await client.get(url + "/metrics")).text


async def test_health_degrades_without_broker_and_recovers(stack: Stack, own_broker: EmbeddedKafka) -> None:
    settings = gateway_settings(stack, kafka_bootstrap_servers=own_broker.bootstrap)
    with serve_in_thread(create_gateway(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:

            async def status_is(expected: str) -> bool:
                response = await client.get("/api/plugins/health")
                return bool(response.json()["status"] == expected)

            await wait_until(lambda: status_is("healthy"), wait_seconds=15)
            own_broker.stop()
            await wait_until(lambda: status_is("degraded"), wait_seconds=15)
            response = await client.get("/api/plugins/health")
            assert response.status_code == 200
            assert response.json()["services"]["events"] == "unhealthy"
            own_broker.start()
            await wait_until(lambda: status_is("healthy"), wait_seconds=15)


def test_health_is_down_and_503_when_a_core_service_is_unreachable(stack: Stack) -> None:
    settings = gateway_settings(stack, auth_url=f"http://127.0.0.1:{free_port()}")
    with serve_in_thread(create_gateway(settings)) as url:
        response = httpx.get(url + "/api/plugins/health")
    assert response.status_code == 503
    assert response.json()["status"] == "down"
    assert response.json()["services"]["authentication"] == "unhealthy"


def test_signed_file_downloads(stack: Stack) -> None:
    storage = LocalStorage(
        stack.var_dir / "storage", public_base_url=stack.gateway_url, signing_secret=DEV.storage_signing_secret
    )
    Path(storage.path_of("renders/t/output.png")).parent.mkdir(parents=True, exist_ok=True)
    storage.path_of("renders/t/output.png").write_bytes(b"\x89PNG-test")
    good = storage.signed_url("renders/t/output.png", ttl_seconds=3600)
    assert httpx.get(good).content == b"\x89PNG-test"
    assert httpx.get(good.replace("signature=", "signature=0")).status_code == 404
    assert httpx.get(good.replace("renders/t/", "renders/u/")).status_code == 404
    expired = int(time.time()) - 5
    stale = (
        f"{stack.gateway_url}/files/renders/t/output.png?expires={expired}"
        f"&signature={sign(DEV.storage_signing_secret, 'renders/t/output.png', expired)}"
    )
    response = httpx.get(stale)
    assert response.status_code == 404
    assert response.json()["errorCode"] == "NOT_FOUND"


def test_oversized_declared_body_is_refused_before_reading(echo_gateway: str, operator: PluginUser) -> None:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(echo_gateway)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        request = (
            "POST /api/plugins/projects HTTP/1.1\r\n"
            f"Host: {parts.hostname}\r\nAuthorization: {operator.bearer['Authorization']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n{"
        )
        sock.sendall(request.encode())
        answer = b""
        while b"}" not in answer.partition(b"\r\n\r\n")[2]:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    text = answer.decode(errors="replace")
    assert text.startswith("HTTP/1.1 413")
    assert '"errorCode":"PAYLOAD_TOO_LARGE"' in text
