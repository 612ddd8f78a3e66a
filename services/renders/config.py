"""Settings of the renders service (env prefix ``RENDERS_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RENDERS_", extra="ignore", populate_by_name=True)

    port: int = 8102
    worker_port: int = 8103
