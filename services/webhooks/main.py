"""App factory of the webhooks service."""

from __future__ import annotations

from fastapi import FastAPI

from services.webhooks.api import router
from services.webhooks.config import Settings
from services.webhooks.models import SCHEMA
from shared.http import create_app as create_service_app
from shared.runtime import Runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    runtime = Runtime(settings or Settings(), service="webhooks", schema=SCHEMA, outbox=True)
    return create_service_app("webhooks", lifespan=runtime.lifespan, readiness=runtime.readiness, routers=[router])
