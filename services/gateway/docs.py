"""The public API's description, served by the gateway: OpenAPI, AsyncAPI and a docs page that needs no CDN."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import FileResponse, HTMLResponse

from services.gateway.openapi import API_VERSION, TITLE, build_openapi
from shared.errors import NotFoundError
from shared.events.asyncapi import asyncapi_document
from shared.responses import JsonResponse

OPENAPI_PATH = "/api/plugins/openapi.json"
ASYNCAPI_PATH = "/api/plugins/asyncapi.json"
DOCS_PATH = "/api/plugins/docs"
ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSET_TYPES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
CACHE = {"Cache-Control": "public, max-age=300"}

router = APIRouter(include_in_schema=False)


@cache
def openapi_document() -> dict[str, Any]:
    """Built once per process: it depends only on the code."""
    return build_openapi()


@cache
def asyncapi() -> dict[str, Any]:
    return asyncapi_document(API_VERSION)


@router.get(OPENAPI_PATH)
async def openapi_json() -> JsonResponse:
    return JsonResponse(openapi_document(), headers=CACHE)


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
        swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
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
