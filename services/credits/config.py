"""Settings of the credits service (env prefix ``CREDITS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CREDITS_", extra="ignore", populate_by_name=True)

    port: int = 8104
    consumer_group: str = "credits"
    """Consumer group on ``render.events``: one per deployment. Tests set their own, so a test's process never
    shares partitions with another process of the same broker (a running stack's credits service)."""
    renders_url: str = "http://127.0.0.1:8102"
    reconcile_after_seconds: float = Field(300.0, ge=0)
    """A reservation unsettled this long is settled from its render's status (renders' internal API)."""
    reconcile_interval_seconds: float = Field(60.0, gt=0)
    reconcile_page_size: int = Field(100, ge=1, le=1000)
