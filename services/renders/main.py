"""App factory of the renders service."""

from __future__ import annotations

from fastapi import FastAPI

from services.renders.api import router
from services.renders.config import Settings
from services.renders.models import SCHEMA
from shared.runtime import Runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    runtime = Runtime(settings or Settings(), service="renders", schema=SCHEMA, outbox=True)
    return runtime.build_app([router])
