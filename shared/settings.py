"""Settings base shared by every service.

Engine URLs and cross-service secrets are read without a prefix (``DATABASE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``,
``REDIS_URL``, ``INTERNAL_IDENTITY_SECRET`` ...) because every process of one deployment shares them; a service's
own settings carry its prefix (``GATEWAY_``, ``AUTH_`` ...) through ``model_config["env_prefix"]``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_MARK = "change-me"
AppEnv = Literal["dev", "test", "production"]


def _unprefixed(name: str) -> AliasChoices:
    return AliasChoices(name)


class ServiceSettings(BaseSettings):
    """Fields every process reads; subclasses add their own with an env prefix."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    app_env: AppEnv = Field("production", validation_alias=_unprefixed("APP_ENV"))
    log_level: str = Field("INFO", validation_alias=_unprefixed("LOG_LEVEL"))
    # Where a service's HTTP server listens: loopback on a laptop, 0.0.0.0 in a pod (NetworkPolicies decide who may
    # connect). The gateway has its own GATEWAY_HOST.
    bind_host: str = Field("127.0.0.1", validation_alias=_unprefixed("BIND_HOST"))
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:55432/platform", validation_alias=_unprefixed("DATABASE_URL")
    )
    db_pool_size: int = Field(10, validation_alias=_unprefixed("DB_POOL_SIZE"))
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias=_unprefixed("KAFKA_BOOTSTRAP_SERVERS"))
    kafka_partitions: int = Field(12, validation_alias=_unprefixed("KAFKA_PARTITIONS"))
    kafka_replication_factor: int = Field(1, validation_alias=_unprefixed("KAFKA_REPLICATION_FACTOR"))
    # Create missing topics before publishing (dev and tests); with Strimzi, KafkaTopic resources own them.
    kafka_create_topics: bool = Field(True, validation_alias=_unprefixed("KAFKA_CREATE_TOPICS"))
    redis_url: str = Field("redis://127.0.0.1:56379/0", validation_alias=_unprefixed("REDIS_URL"))
    internal_identity_secret: str = Field(
        f"dev-internal-identity-secret-{PLACEHOLDER_MARK}",
        validation_alias=_unprefixed("INTERNAL_IDENTITY_SECRET"),
    )
    internal_identity_ttl_seconds: int = Field(60, validation_alias=_unprefixed("INTERNAL_IDENTITY_TTL_SECONDS"))
    storage_backend: Literal["local", "s3"] = Field("local", validation_alias=_unprefixed("STORAGE_BACKEND"))
    storage_dir: str = Field("var/storage", validation_alias=_unprefixed("STORAGE_DIR"))
    storage_signing_secret: str = Field(
        f"dev-storage-signing-secret-{PLACEHOLDER_MARK}", validation_alias=_unprefixed("STORAGE_SIGNING_SECRET")
    )
    # S3-compatible backend (STORAGE_BACKEND=s3). No endpoint means AWS itself; set one for MinIO or moto. Without
    # explicit keys boto3's default credential chain applies (env, profile, instance/task role).
    s3_bucket: str = Field("", validation_alias=_unprefixed("S3_BUCKET"))
    s3_endpoint_url: str | None = Field(None, validation_alias=_unprefixed("S3_ENDPOINT_URL"))
    s3_region: str = Field("us-east-1", validation_alias=_unprefixed("S3_REGION"))
    s3_access_key_id: str | None = Field(None, validation_alias=_unprefixed("S3_ACCESS_KEY_ID"))
    s3_secret_access_key: str | None = Field(None, validation_alias=_unprefixed("S3_SECRET_ACCESS_KEY"))
    # Outputs must stay downloadable for at least an hour; SigV4 presigned URLs cannot outlive 7 days.
    s3_url_ttl_seconds: int = Field(86400, ge=3600, le=604800, validation_alias=_unprefixed("S3_URL_TTL_SECONDS"))
    s3_create_bucket: bool = Field(False, validation_alias=_unprefixed("S3_CREATE_BUCKET"))
    public_base_url: str = Field("http://127.0.0.1:8080", validation_alias=_unprefixed("PUBLIC_BASE_URL"))
    # Outgoing calls to user URLs (webhooks, callback_url): private networks only when set, or by default in dev.
    webhook_allow_private_networks: bool | None = Field(
        None, validation_alias=_unprefixed("WEBHOOK_ALLOW_PRIVATE_NETWORKS")
    )
    # SIGTERM: consumers stop fetching and get this long to finish in-flight work before it is abandoned safely
    # (Kubernetes' terminationGracePeriodSeconds must be longer).
    shutdown_grace_seconds: float = Field(25.0, ge=0, validation_alias=_unprefixed("SHUTDOWN_GRACE_SECONDS"))
    outbox_batch_size: int = Field(500, validation_alias=_unprefixed("OUTBOX_BATCH_SIZE"))
    outbox_poll_seconds: float = Field(1.0, validation_alias=_unprefixed("OUTBOX_POLL_SECONDS"))
    # A broker that comes back without its data (a new cluster id, or topics the relay had to create again): the
    # relay publishes again what it sent within this window (consumers dedupe by event id).
    outbox_replay_window_seconds: float = Field(
        3600.0, ge=0, validation_alias=_unprefixed("OUTBOX_REPLAY_WINDOW_SECONDS")
    )
    outbox_retention_seconds: float = Field(86400.0, ge=0, validation_alias=_unprefixed("OUTBOX_RETENTION_SECONDS"))
    kafka_cluster_check_seconds: float = Field(5.0, gt=0, validation_alias=_unprefixed("KAFKA_CLUSTER_CHECK_SECONDS"))
    # A record that keeps failing for a reason of its own is retried this long, then dead-lettered (transient
    # infrastructure errors retry without limit and are never dead-lettered).
    consumer_retry_budget_seconds: float = Field(
        30.0, ge=0, le=60, validation_alias=_unprefixed("CONSUMER_RETRY_BUDGET_SECONDS")
    )
    # Processed-event ids (consumer dedupe) are kept this long: longer than any redelivery or replay can come.
    processed_events_retention_seconds: float = Field(
        14 * 86400.0, ge=3600, validation_alias=_unprefixed("PROCESSED_EVENTS_RETENTION_SECONDS")
    )
    retention_interval_seconds: float = Field(600.0, gt=0, validation_alias=_unprefixed("RETENTION_INTERVAL_SECONDS"))

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> ServiceSettings:
        """Placeholder secrets are for a laptop only: anywhere else they would make tokens forgeable."""
        if self.app_env == "dev":
            return self
        for name, value in self:
            if isinstance(value, str) and "secret" in name and PLACEHOLDER_MARK in value:
                raise ValueError(
                    f"{name.upper()} still holds its placeholder; set a real secret or run with APP_ENV=dev"
                )
        return self

    @property
    def is_dev(self) -> bool:
        return self.app_env == "dev"

    @property
    def allow_private_networks(self) -> bool:
        explicit = self.webhook_allow_private_networks
        return self.is_dev if explicit is None else explicit
