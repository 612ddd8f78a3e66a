"""Each service's own OpenAPI document, from its routes and models, served at ``/internal/openapi.json``.

The gateway merges the services' documents into the public one (``services.gateway.openapi``): it never imports
a service's code, it asks the running services, so the document describes what is deployed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.openapi.utils import get_openapi

from shared.responses import JsonResponse

INTERNAL_OPENAPI_PATH = "/internal/openapi.json"


def service_openapi(service: str, routers: Sequence[APIRouter]) -> dict[str, Any]:
    """OpenAPI 3.1 of a service's API routers as FastAPI derives it (internal routes included: the gateway keeps
    the public ones)."""
    collected = APIRouter()
    for router in routers:
        collected.include_router(router)
    return get_openapi(title=service, version="internal", openapi_version="3.1.0", routes=collected.routes)


def openapi_router(service: str, routers: Sequence[APIRouter]) -> APIRouter:
    """``/internal/openapi.json``: built on first request, then cached (it depends only on the code)."""
    router = APIRouter(include_in_schema=False)
    cached: dict[str, Any] = {}

    @router.get(INTERNAL_OPENAPI_PATH)
    async def openapi() -> JsonResponse:
        if not cached:
            cached.update(service_openapi(service, routers))
        return JsonResponse(cached)

    return router
