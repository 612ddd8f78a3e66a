"""App factory of the credits service."""

from __future__ import annotations

from fastapi import FastAPI

from services.credits.api import router
from services.credits.config import Settings
from services.credits.models import SCHEMA
from shared.runtime import Runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    runtime = Runtime(settings or Settings(), service="credits", schema=SCHEMA, outbox=False)
    return runtime.build_app([router])
