"""Settings of the telemetry service (env prefix ``TELEMETRY_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="TELEMETRY_", extra="ignore", populate_by_name=True)

    port: int = 8107
