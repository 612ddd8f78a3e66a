"""Response models of the gateway's own routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ApiInfo(BaseModel):
    version: str
    platform: str
    version_detected: str | None


class HealthResponse(BaseModel):
    success: bool
    status: Literal["healthy", "degraded", "down"]
    timestamp: str
    api: ApiInfo
    services: dict[str, str]
