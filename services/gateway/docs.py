"""The public API's description, served by the gateway: OpenAPI, AsyncAPI and a docs page that needs no CDN."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import fastapi_offline
import structlog
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import FileResponse, HTMLResponse

from services.gateway.openapi import API_VERSION, DOCUMENTED_SERVICES, TITLE, build_openapi
from shared.errors import NotFoundError, ServiceUnavailableError
from shared.events.asyncapi import asyncapi_document
from shared.openapi import INTERNAL_OPENAPI_PATH
from shared.responses import JsonResponse

OPENAPI_PATH = "/api/plugins/openapi.json"
ASYNCAPI_PATH = "/api/plugins/asyncapi.json"
DOCS_PATH = "/api/plugins/docs"
ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSET_TYPES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
CACHE = {"Cache-Control": "public, max-age=300"}

router = APIRouter(include_in_schema=False)
log = structlog.stdlib.get_logger(__name__)


class PublicSpec:
    """The public document, merged from what the running services say of themselves. Rebuilt after ``ttl`` so a
    service's new version shows; while a service does not answer, the last document built is served."""

    def __init__(self, upstreams: Mapping[str, str], session: aiohttp.ClientSession, ttl: float = 60.0) -> None:
        self.upstreams = {name: upstreams[name] for name in DOCUMENTED_SERVICES}
        self.session = session
        self.ttl = ttl
        self._document: dict[str, Any] | None = None
        self._built_at = 0.0
        self._lock = asyncio.Lock()

    async def document(self) -> dict[str, Any]:
        async with self._lock:
            if self._document is not None and time.monotonic() - self._built_at < self.ttl:
                return self._document
            try:
                specs = await asyncio.gather(*(self._fetch(name, url) for name, url in self.upstreams.items()))
            except ServiceUnavailableError:
                if self._document is None:
                    raise
                log.warning("openapi_refresh_failed_serving_last")
                self._built_at = time.monotonic()
                return self._document
            self._document = build_openapi(dict(zip(self.upstreams, specs, strict=True)))
            self._built_at = time.monotonic()
            return self._document

    async def _fetch(self, name: str, url: str) -> dict[str, Any]:
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with self.session.get(url + INTERNAL_OPENAPI_PATH, timeout=timeout) as response:
                response.raise_for_status()
                spec: dict[str, Any] = await response.json()
                return spec
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("openapi_fetch_failed", service=name, error=type(exc).__name__)
            raise ServiceUnavailableError(
                "The API description is unavailable: a service did not answer", details={"service": name}
            ) from exc


@cache
def asyncapi() -> dict[str, Any]:
    return asyncapi_document(API_VERSION)


@router.get(OPENAPI_PATH)
async def openapi_json(request: Request) -> JsonResponse:
    spec: PublicSpec = request.app.state.public_spec
    return JsonResponse(await spec.document(), headers=CACHE)


@router.get(ASYNCAPI_PATH)
async def asyncapi_json() -> JsonResponse:
    return JsonResponse(asyncapi(), headers=CACHE)


@router.get(DOCS_PATH)
async def docs() -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=OPENAPI_PATH,
        title=f"{TITLE} {API_VERSION}",
        swagger_js_url=f"{DOCS_PATH}/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_PATH}/assets/swagger-ui.css",
        swagger_favicon_url="/admin/favicon.svg",
        swagger_ui_parameters={"displayRequestDuration": True},  # credentials typed in are not kept
    )
    page.headers.update({"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"})
    return page


@router.get(DOCS_PATH + "/assets/{name}")
async def docs_asset(name: str) -> FileResponse:
    """Swagger UI's files from the installed wheel: the page works offline and loads nothing from elsewhere."""
    media_type = ASSET_TYPES.get(name)
    if media_type is None:
        raise NotFoundError("Not found")
    return FileResponse(ASSETS / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})
