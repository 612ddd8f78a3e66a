"""Settings of the webhooks service (env prefix ``WEBHOOKS_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEBHOOKS_", extra="ignore", populate_by_name=True)

    port: int = 8105
    dispatcher_port: int = 8106
