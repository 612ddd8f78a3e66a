"""Settings of the telemetry service (env prefix ``TELEMETRY_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TELEMETRY_", extra="ignore", populate_by_name=True)

    port: int = 8107
    consumer_group: str = "telemetry"
    """Consumer group on ``render.events``, ``gateway.requests`` and ``webhook.events``."""
    batch_size: int = Field(2000, ge=1)
    """Events per ingest transaction (at most)."""
    raw_retention_days: float = Field(7, gt=0)
    """Raw events (and so their ids, the dedupe of redelivered events) are kept this long."""
    minute_rollup_retention_days: float = Field(14, gt=0)
    """Per-minute rollups are kept this long; hourly rollups are kept. Older windows are counted in whole hours."""
    lag_interval_seconds: float = Field(15, gt=0)
    """How often consumer lag per group is measured for ``plugin_consumer_lag``."""
    max_window_days: int = Field(93, ge=1)
    """The longest ``since..until`` a summary may span."""
