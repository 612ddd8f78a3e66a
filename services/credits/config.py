"""Settings of the credits service (env prefix ``CREDITS_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CREDITS_", extra="ignore", populate_by_name=True)

    port: int = 8104
