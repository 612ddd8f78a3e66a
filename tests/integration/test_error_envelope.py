"""Every error an app can produce comes out in the contract's envelope (real HTTP server, shared app factory)."""

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from shared.errors import DomainError
from shared.http import create_app
from shared.settings import ServiceSettings
from shared.testing.servers import serve_in_thread


class Body(BaseModel):
    name: str = Field(min_length=1)
    count: int = Field(ge=0)


def build_app() -> FastAPI:
    router = APIRouter()

    @router.post("/items")
    async def create(body: Body) -> dict[str, object]:
        return {"success": True, "data": body.model_dump()}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter22")

    @router.get("/conflict")
    async def conflict() -> None:
        raise DomainError("Already there", status_code=409, error_code="ALREADY_EXISTS", details={"id": "x"})

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    async def readiness() -> dict[str, object]:
        return {}

    return create_app(
        "envelope-test",
        settings=ServiceSettings(app_env="dev"),
        lifespan=lifespan,
        readiness=readiness,
        routers=[router],
    )


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_in_thread(build_app()) as url:
        yield url


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    body = response.json()
    assert body["success"] is False
    assert body["errorCode"] == code
    assert isinstance(body["error"], str)
    assert body["error"]
    assert "details" in body
    assert response.headers["x-request-id"]
    return body


def test_unknown_route_is_not_found(base_url: str) -> None:
    assert_envelope(httpx.get(base_url + "/nope"), 404, "NOT_FOUND")


def test_wrong_method(base_url: str) -> None:
    assert_envelope(httpx.delete(base_url + "/items"), 405, "INVALID_INPUT")


def test_validation_error_names_the_field(base_url: str) -> None:
    body = assert_envelope(httpx.post(base_url + "/items", json={"name": "a", "count": -1}), 400, "INVALID_INPUT")
    assert body["details"]["field"] == "count"  # type: ignore[index]
    assert body["details"]["reason"]  # type: ignore[index]


def test_wrong_type(base_url: str) -> None:
    body = assert_envelope(httpx.post(base_url + "/items", json={"name": "a", "count": "x"}), 400, "INVALID_INPUT")
    assert body["details"]["field"] == "count"  # type: ignore[index]


def test_missing_field(base_url: str) -> None:
    body = assert_envelope(httpx.post(base_url + "/items", json={"count": 1}), 400, "MISSING_REQUIRED_FIELD")
    assert body["details"] == {"field": "name"}


def test_malformed_json(base_url: str) -> None:
    response = httpx.post(
        base_url + "/items", content=b'{"name": "a", "count":', headers={"content-type": "application/json"}
    )
    body = assert_envelope(response, 400, "INVALID_INPUT")
    assert body["details"]["reason"] == "malformed JSON"  # type: ignore[index]


def test_domain_error(base_url: str) -> None:
    body = assert_envelope(httpx.get(base_url + "/conflict"), 409, "ALREADY_EXISTS")
    assert body["details"] == {"id": "x"}


def test_unexpected_exception_is_500_without_internals(base_url: str) -> None:
    response = httpx.get(base_url + "/boom", headers={"x-request-id": "req-boom-1"})
    body = assert_envelope(response, 500, "INTERNAL_ERROR")
    assert body["details"] == {"requestId": "req-boom-1"}
    assert response.headers["x-request-id"] == "req-boom-1"
    assert "Traceback" not in response.text
    assert "hunter22" not in response.text
    assert "RuntimeError" not in response.text


async def test_an_unexpected_exception_does_not_escape_the_app() -> None:
    """The 500 is the app's whole answer: nothing propagates to the server, which would close the connection."""
    transport = httpx.ASGITransport(app=build_app())  # re-raises whatever escapes the app
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/boom", headers={"x-request-id": "req-boom-2"})
    body = assert_envelope(response, 500, "INTERNAL_ERROR")
    assert body["details"] == {"requestId": "req-boom-2"}


def test_request_id_echoed_or_generated(base_url: str) -> None:
    assert httpx.get(base_url + "/health/live", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == (
        "abc-123"
    )
    generated = httpx.get(base_url + "/health/live").headers["x-request-id"]
    assert len(generated) == 32
    # A caller's id that is not safe to log is replaced.
    assert httpx.get(base_url + "/health/live", headers={"x-request-id": "a b"}).headers["x-request-id"] != "a b"


def test_service_routes_need_internal_identity(base_url: str) -> None:
    assert_envelope(httpx.get(base_url + "/internal/whoami"), 401, "AUTH_REQUIRED")
    forged = httpx.get(base_url + "/internal/whoami", headers={"x-internal-identity": "eyJhbGciOiJub25lIn0.e30."})
    assert_envelope(forged, 401, "AUTH_REQUIRED")
