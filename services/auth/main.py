"""App factory of the auth service."""

from __future__ import annotations

from fastapi import FastAPI

from services.auth.api import router
from services.auth.config import Settings
from services.auth.models import SCHEMA
from shared.runtime import Runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    runtime = Runtime(settings or Settings(), service="auth", schema=SCHEMA, outbox=True)
    return runtime.build_app([router])
