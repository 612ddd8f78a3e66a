"""Settings of the auth service (env prefix ``AUTH_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore", populate_by_name=True)

    port: int = 8101
