"""App factory of the credits service: its HTTP API and its ``render.events`` consumer in one process."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from services.credits.api import routers
from services.credits.config import Settings
from services.credits.events import wire
from services.credits.models import SCHEMA
from shared.runtime import Runtime


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = Runtime(
        settings, service="credits", schema=SCHEMA, subscribers=partial(wire, group=settings.consumer_group)
    )
    return runtime.build_app(routers)
