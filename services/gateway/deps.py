"""Dependency aliases of the gateway: the process-wide clients kept on ``app.state``."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import Depends, Request

from services.gateway.config import Settings
from services.gateway.health import HealthChecker
from shared.storage import Storage


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _client(request: Request) -> httpx.AsyncClient:
    return request.app.state.http


def _health(request: Request) -> HealthChecker:
    return request.app.state.health


def _storage(request: Request) -> Storage:
    return request.app.state.storage


SettingsDep = Annotated[Settings, Depends(_settings)]
ClientDep = Annotated[httpx.AsyncClient, Depends(_client)]
HealthDep = Annotated[HealthChecker, Depends(_health)]
StorageDep = Annotated[Storage, Depends(_storage)]
