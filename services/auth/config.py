"""Settings of the auth service (env prefix ``AUTH_``; ``SIGNUP_CREDITS`` and ``ADMIN_EMAILS`` are unprefixed)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore", populate_by_name=True)

    port: int = 8101
    issuer: str = "plugin-platform"
    audience: str = "plugin-api"
    access_token_ttl_seconds: int = 3600
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    # Ed25519 private keys in PEM; the last one signs, all are published in the JWKS (rotation without logouts).
    signing_keys: str = ""
    signing_keys_dir: str = "var/keys"
    # argon2id: RFC 9106's second recommended option (t=3, 64 MiB), 2 lanes for a 2-core host (~100 ms here).
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 2
    max_concurrent_hashes: int = 2  # one per core: more only queues threads and memory (64 MiB each)
    credits_url: str = "http://127.0.0.1:8104"
    signup_credits: int = Field(10, validation_alias=AliasChoices("SIGNUP_CREDITS", "AUTH_SIGNUP_CREDITS"))
    admin_emails: str = Field("", validation_alias=AliasChoices("ADMIN_EMAILS", "AUTH_ADMIN_EMAILS"))

    def admin_email_set(self) -> frozenset[str]:
        return frozenset(e.strip().lower() for e in self.admin_emails.split(",") if e.strip())
