"""App factory of the telemetry service."""

from __future__ import annotations

from fastapi import FastAPI

from services.telemetry.api import router
from services.telemetry.config import Settings
from services.telemetry.models import SCHEMA
from shared.runtime import Runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    runtime = Runtime(settings or Settings(), service="telemetry", schema=SCHEMA, outbox=False)
    return runtime.build_app([router])
