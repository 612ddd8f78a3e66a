"""The gateway's public document comes from the running services: a service that does not answer is a 503 until a
first document exists, then the last one is served; a service's new version shows after the refresh interval."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.gateway.docs import PublicSpec
from services.gateway.openapi import DOCUMENTED_SERVICES
from shared.errors import ServiceUnavailableError
from shared.openapi import INTERNAL_OPENAPI_PATH
from shared.testing.servers import serve_in_thread


class FakeServices:
    """Answers ``/internal/openapi.json`` for every service; credits' has one operation whose summary can change."""

    def __init__(self) -> None:
        self.failing = False
        self.summary = "Credits"
        self.requests = 0

    def spec(self, service: str) -> dict[str, Any]:
        probe = {
            "get": {
                "summary": self.summary,
                "operationId": "probe_api_plugins_credits_probe_get",
                "responses": {"200": {"description": "ok"}},
            }
        }
        paths = {"/api/plugins/credits/probe": probe} if service == "credits" else {}
        return {"openapi": "3.1.0", "info": {"title": service, "version": "x"}, "paths": paths}

    async def endpoint(self, request: Request) -> Response:
        self.requests += 1
        if self.failing:
            return JSONResponse({"success": False}, status_code=500)
        return JSONResponse(self.spec(request.path_params["service"]))


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[FakeServices, str]]:
    fake = FakeServices()
    app = Starlette(routes=[Route("/{service}" + INTERNAL_OPENAPI_PATH, fake.endpoint)])
    with serve_in_thread(app) as url:
        yield fake, url


def public_spec(url: str, session: aiohttp.ClientSession, ttl: float) -> PublicSpec:
    return PublicSpec({name: f"{url}/{name}" for name in DOCUMENTED_SERVICES}, session, ttl=ttl)


async def test_no_document_while_a_service_is_down_then_the_last_one(services: tuple[FakeServices, str]) -> None:
    fake, url = services
    async with aiohttp.ClientSession() as session:
        fake.failing = True
        spec = public_spec(url, session, ttl=0)
        with pytest.raises(ServiceUnavailableError):
            await spec.document()
        fake.failing = False
        first = await spec.document()
        assert "/api/plugins/credits/probe" in first["paths"]
        fake.failing, fake.summary = True, "Changed"
        assert await spec.document() == first  # the last good document while they do not answer
        fake.failing = False
        changed = await spec.document()
        assert changed["paths"]["/api/plugins/credits/probe"]["get"]["summary"] == "Changed"
    fake.summary = "Credits"


async def test_the_document_is_reused_within_the_refresh_interval(services: tuple[FakeServices, str]) -> None:
    fake, url = services
    async with aiohttp.ClientSession() as session:
        spec = public_spec(url, session, ttl=3600)
        await spec.document()
        asked = fake.requests
        for _ in range(5):
            await spec.document()
        assert fake.requests == asked
