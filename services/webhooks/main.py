"""App factory of the webhooks API: registrations, the delivery log, resend, callback secrets."""

from __future__ import annotations

from fastapi import FastAPI

from services.webhooks.api import router
from services.webhooks.config import Settings
from services.webhooks.models import SCHEMA
from shared.runtime import Runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    runtime = Runtime(settings or Settings(), service="webhooks", schema=SCHEMA)
    return runtime.build_app([router])
