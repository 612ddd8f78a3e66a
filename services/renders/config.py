"""Settings of the renders service and render worker (env prefix ``RENDERS_``; a few contract-level ones unprefixed)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RENDERS_", extra="ignore", populate_by_name=True)

    port: int = 8102
    worker_port: int = 8103
    credits_url: str = "http://127.0.0.1:8104"
    max_upload_bytes: int = Field(
        50 * 1024 * 1024, validation_alias=AliasChoices("MAX_UPLOAD_BYTES", "RENDERS_MAX_UPLOAD_BYTES")
    )
    max_input_pixels: int = 50_000_000
    max_concurrent_uploads: int = 16  # bounds the memory held by uploads being parsed and validated at once
    cost_standard: int = Field(5, validation_alias=AliasChoices("RENDER_COST_STANDARD", "RENDERS_COST_STANDARD"))
    cost_high: int = Field(10, validation_alias=AliasChoices("RENDER_COST_HIGH", "RENDERS_COST_HIGH"))
    cost_ultra: int = Field(15, validation_alias=AliasChoices("RENDER_COST_ULTRA", "RENDERS_COST_ULTRA"))
    default_model: str = "local"
    gemini_api_key: str | None = Field(None, validation_alias=AliasChoices("GEMINI_API_KEY", "RENDERS_GEMINI_API_KEY"))
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    gemini_models: str = "gemini-2.5-flash-image"
    gemini_timeout_seconds: float = 120.0
    renderer_processes: int = 1
    png_compress_level: int = 3
    output_url_ttl_seconds: int = 24 * 3600
    idempotency_ttl_seconds: int = Field(24 * 3600, ge=24 * 3600)  # the contract's replay window is 24 h
    file_retention_days: float = Field(30.0, gt=0)
    """Inputs and outputs of renders that ended this long ago are deleted (never before their URLs expire)."""
    # Worker: a claim is a lease kept alive by progress heartbeats; a dead worker's job is redone once it lapses.
    consumer_group: str = "render-workers"
    lease_seconds: float = 30.0
    max_attempts: int = 3
    provider_retries: int = 2
    stuck_timeout_seconds: float = 900.0
    pending_requeue_seconds: float = 120.0
    watchdog_interval_seconds: float = 30.0
    sse_heartbeat_seconds: float = 15.0

    @model_validator(mode="after")
    def _files_outlive_their_links(self) -> Settings:
        if self.file_retention_days * 86400 < self.output_url_ttl_seconds:
            raise ValueError("RENDERS_FILE_RETENTION_DAYS must cover RENDERS_OUTPUT_URL_TTL_SECONDS")
        return self

    def cost_of(self, quality: str) -> int:
        return {"standard": self.cost_standard, "high": self.cost_high, "ultra": self.cost_ultra}[quality]
