"""App factory of the renders service."""

from __future__ import annotations

from fastapi import FastAPI

from services.renders.api import router
from services.renders.config import Settings
from services.renders.models import SCHEMA
from shared.http import create_app as create_service_app
from shared.runtime import Runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    runtime = Runtime(settings or Settings(), service="renders", schema=SCHEMA, outbox=True)
    return create_service_app("renders", lifespan=runtime.lifespan, readiness=runtime.readiness, routers=[router])
