"""App factory of the telemetry service."""

from __future__ import annotations

from fastapi import FastAPI

from services.telemetry.api import router
from services.telemetry.config import Settings
from services.telemetry.models import SCHEMA
from shared.http import create_app as create_service_app
from shared.runtime import Runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    runtime = Runtime(settings or Settings(), service="telemetry", schema=SCHEMA, outbox=False)
    return create_service_app("telemetry", lifespan=runtime.lifespan, readiness=runtime.readiness, routers=[router])
