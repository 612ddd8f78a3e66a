"""Settings base shared by every service.

Engine URLs and cross-service secrets are read without a prefix (``DATABASE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``,
``REDIS_URL``, ``INTERNAL_IDENTITY_PUBLIC_KEY`` ...) because every process of one deployment shares them; a
service's own settings carry its prefix (``GATEWAY_``, ``AUTH_`` ...) through ``model_config["env_prefix"]``.
"""

from __future__ import annotations

from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.keys import (
    GATEWAY_IDENTITY,
    SERVICE_CALLERS,
    dev_private_key,
    is_dev_key,
    load_private_key,
    load_public_key,
)

PLACEHOLDER_MARK = "change-me"
AppEnv = Literal["dev", "test", "production"]


def _unprefixed(name: str) -> AliasChoices:
    return AliasChoices(name)


def _split(keys: str) -> list[str]:
    """A key setting may hold several keys, comma-separated (rotation); empty means none."""
    return [k.strip() for k in keys.split(",") if k.strip()] or [""]


class ServiceSettings(BaseSettings):
    """Fields every process reads; subclasses add their own with an env prefix."""

    # A refusal names the variable, never its value: errors must not print keys or secrets (nor their tails).
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, hide_input_in_errors=True)

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
    # Internal identity (shared/identity.py): the gateway signs user and operator identities with its private key
    # (GATEWAY_IDENTITY_PRIVATE_KEY, the gateway's alone); every service verifies them with this public key (or
    # these, comma-separated, while a new gateway key is rolled out).
    internal_identity_public_key: str = Field("", validation_alias=_unprefixed("INTERNAL_IDENTITY_PUBLIC_KEY"))
    # Service-to-service calls: this process's own private key (only a caller of another service's /internal API
    # has one), and the public keys of the services that may call this one, by name ({"auth": "<key>", ...}).
    service_identity_key: str = Field("", validation_alias=_unprefixed("SERVICE_IDENTITY_KEY"))
    service_identity_public_keys: dict[str, str] = Field(
        default_factory=dict, validation_alias=_unprefixed("SERVICE_IDENTITY_PUBLIC_KEYS")
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
        """Placeholder secrets and dev keys are for a laptop only: anywhere else they would make tokens forgeable."""
        if not self.is_dev:
            for name, value in self:
                if isinstance(value, str) and "secret" in name and PLACEHOLDER_MARK in value:
                    raise ValueError(
                        f"{name.upper()} still holds its placeholder; set a real secret or run with APP_ENV=dev"
                    )
        self._check_identity_keys()
        return self

    def _check_identity_keys(self) -> None:
        """Every configured key parses; outside dev the required keys are set and none is a (public) dev key."""
        # (variable, value, is a private key, required outside dev)
        keys: list[tuple[str, str, bool, bool]] = [
            *(("INTERNAL_IDENTITY_PUBLIC_KEY", v, False, True) for v in _split(self.internal_identity_public_key)),
            ("SERVICE_IDENTITY_KEY", self.service_identity_key, True, False),  # checked when a call is wired
            *(
                (f"SERVICE_IDENTITY_PUBLIC_KEYS[{n}]", v, False, True)
                for n, v in self.service_identity_public_keys.items()
            ),
            *(
                (self.model_config.get("env_prefix", "") + n.upper(), v, True, True)
                for n, v in self
                if n.endswith("private_key") and isinstance(v, str)
            ),
        ]
        for name, value, private, required in keys:
            if not value:
                if required and not self.is_dev:
                    raise ValueError(f"{name} is not set (dev keys apply only with APP_ENV=dev)")
                continue
            try:
                load_private_key(value) if private else load_public_key(value)
            except ValueError as exc:
                raise ValueError(f"{name} is not an Ed25519 {'private' if private else 'public'} key") from exc
            if not self.is_dev and is_dev_key(value, private=private):
                raise ValueError(f"{name} holds a dev key, which anyone can derive; set a real key or APP_ENV=dev")

    def identity_public_keys(self) -> tuple[Ed25519PublicKey, ...]:
        """The keys that verify the gateway's user and operator identities (two while one is rotated in)."""
        if self.internal_identity_public_key:
            return tuple(load_public_key(v) for v in _split(self.internal_identity_public_key))
        return (dev_private_key(GATEWAY_IDENTITY).public_key(),)  # dev only: the validator refused this elsewhere

    def caller_public_key(self, service: str) -> Ed25519PublicKey | None:
        """The public key of a service allowed to call this one, or None for a service it does not know."""
        if self.service_identity_public_keys:
            text = self.service_identity_public_keys.get(service)
            return load_public_key(text) if text else None
        if self.is_dev and service in SERVICE_CALLERS:
            return dev_private_key(service).public_key()
        return None

    def service_private_key(self, service: str) -> Ed25519PrivateKey:
        """This process's own key for calls it makes as ``service``; required outside dev."""
        if self.service_identity_key:
            return load_private_key(self.service_identity_key)
        if not self.is_dev:
            raise ValueError(f"SERVICE_IDENTITY_KEY is not set: {service} cannot call another service")
        return dev_private_key(service)

    @property
    def is_dev(self) -> bool:
        return self.app_env == "dev"

    @property
    def allow_private_networks(self) -> bool:
        explicit = self.webhook_allow_private_networks
        return self.is_dev if explicit is None else explicit
