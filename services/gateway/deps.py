"""Dependency aliases of the gateway's own routes: the process-wide objects kept on ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.gateway.config import Settings
from services.gateway.health import HealthChecker
from shared.storage import Storage


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _health(request: Request) -> HealthChecker:
    return request.app.state.health


def _storage(request: Request) -> Storage:
    return request.app.state.storage


SettingsDep = Annotated[Settings, Depends(_settings)]
HealthDep = Annotated[HealthChecker, Depends(_health)]
StorageDep = Annotated[Storage, Depends(_storage)]
