"""A trivial service behind the gateway, for measuring the gateway's own cost.

Built with ``shared.http.create_app`` so it has the same middleware, error handling and identity check as every real
service; it answers ``GET /api/plugins/credits/ping`` (a path the gateway routes to ``credits``) with a tiny JSON body.
Run as ``python -m bench.trivial_upstream --port N``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import typer
from fastapi import APIRouter, FastAPI

from shared.http import create_app as create_service_app
from shared.identity import IdentityDep
from shared.logging import configure_logging
from shared.responses import JsonResponse
from shared.serve import serve
from shared.settings import ServiceSettings

SERVICE = "bench-upstream"
PING_PATH = "/api/plugins/credits/ping"

router = APIRouter()


@router.get(PING_PATH)
async def ping(identity: IdentityDep) -> JsonResponse:
    """Answer only callers carrying a valid internal identity (``IdentityDep`` raises 401 otherwise)."""
    return JsonResponse({"success": True, "data": {"pong": True}})


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The upstream app; settings (hence the identity public key) come from the environment like any service."""
    settings = settings or ServiceSettings()
    configure_logging(SERVICE, json_logs=not settings.is_dev, level=settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield  # no resources; ``create_app`` puts the settings (read by ``require_identity``) on ``app.state``

    async def readiness() -> dict[str, Any]:
        return {}

    return create_service_app(SERVICE, settings=settings, lifespan=lifespan, readiness=readiness, routers=[router])


def main(port: int = typer.Option(..., help="Port to listen on (127.0.0.1).")) -> None:
    """Serve the trivial upstream on 127.0.0.1:PORT."""
    serve(create_app, port=port)


if __name__ == "__main__":
    typer.run(main)
