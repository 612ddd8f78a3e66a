"""Settings of the webhooks service (env prefix ``WEBHOOKS_``; the delivery policy names of API.md are unprefixed)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

DEFAULT_RETRY_SCHEDULE = "5,300,1800,7200,18000,36000,36000"


def parse_schedule(value: str) -> tuple[float, ...]:
    """``"5,300,1800"`` → ``(5.0, 300.0, 1800.0)``: the waits after the 1st, 2nd, 3rd ... failed attempt."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    delays = tuple(float(p) for p in parts)
    if any(d < 0 or d > 7 * 86400 for d in delays):
        raise ValueError("each retry delay must be between 0 and 604800 seconds")
    return delays


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEBHOOKS_", extra="ignore", populate_by_name=True)

    port: int = 8105
    dispatcher_port: int = 8106
    consumer_group: str = "webhooks"
    """Consumer group on ``render.events`` (tests set their own so their dispatchers never share partitions)."""

    retry_schedule: str = Field(
        DEFAULT_RETRY_SCHEDULE, validation_alias=AliasChoices("WEBHOOK_RETRY_SCHEDULE", "retry_schedule")
    )
    """Seconds to wait after each failed attempt (±20% jitter); its length is the number of retries."""
    disable_after_failures: int = Field(
        10, ge=1, validation_alias=AliasChoices("WEBHOOK_DISABLE_AFTER_FAILURES", "disable_after_failures")
    )
    disable_after_seconds: float = Field(
        86400, ge=0, validation_alias=AliasChoices("WEBHOOK_DISABLE_AFTER_SECONDS", "disable_after_seconds")
    )
    timeout_seconds: float = Field(
        15, gt=0, le=60, validation_alias=AliasChoices("WEBHOOK_TIMEOUT_SECONDS", "timeout_seconds")
    )
    """An attempt that has not answered 2xx within this time failed (connect, send and response together)."""

    endpoint_concurrency: int = Field(32, ge=1)
    """Attempts in flight to one endpoint (per dispatcher process): a slow endpoint never takes every slot."""
    max_in_flight: int = Field(512, ge=1)
    """Attempts in flight per dispatcher process, all endpoints together."""
    claim_batch: int = Field(200, ge=1)
    poll_seconds: float = Field(0.5, gt=0)
    """Idle re-check of due retries; new deliveries wake the dispatcher at once (LISTEN/NOTIFY)."""
    lease_seconds: float = Field(60, gt=0)
    """A claimed delivery is another process's again after this long (its claimer died mid-attempt)."""
    max_endpoints_per_user: int = Field(50, ge=1)
    manual_sends_per_minute: int = Field(10, ge=1)
    """``test`` and ``resend`` calls per endpoint in any 60 s (all replicas together); beyond, 429 with
    ``Retry-After``: an owner cannot turn the platform into a signed-POST cannon aimed at someone else's URL."""
    response_body_bytes: int = Field(1024, ge=0)
    """How much of a receiver's response body the attempt log keeps."""
    retention_days: float = Field(30, gt=0)
    """Finished deliveries (with their attempts) and processed-event records older than this are deleted."""
    held_retention_days: float = Field(30, gt=0)
    """A delivery held this long for a disabled endpoint is canceled (and deleted ``retention_days`` later)."""
    output_url_ttl_seconds: int = Field(86400, ge=60, le=604800)
    """Validity of the ``outputUrl`` signed at each attempt: retries and resends span days, so it is never the
    URL minted when the render completed (604800 s is the longest an S3 presigned URL may live)."""

    @field_validator("retry_schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @property
    def retry_delays(self) -> tuple[float, ...]:
        return parse_schedule(self.retry_schedule)
