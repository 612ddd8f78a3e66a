"""Settings of the auth service (env prefix ``AUTH_``; ``SIGNUP_CREDITS`` and ``ADMIN_EMAILS`` are unprefixed)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from shared.emails import InvalidEmailError, normalize_email
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
    # Sign-in lock-out per account (per normalised email, known or not), in auth's database: independent of the
    # client IP and of Redis. After ``signin_free_failures`` consecutive failures each further failure locks the
    # address for base * 2**(failures - free) seconds, capped; failures older than ``signin_failure_memory_seconds``
    # (counted from the end of the last lock-out) are forgotten. See ``services.auth.lockout``.
    signin_free_failures: int = Field(5, ge=1)
    signin_lockout_base_seconds: float = Field(2.0, gt=0)
    signin_lockout_max_seconds: float = Field(900.0, gt=0)
    signin_failure_memory_seconds: float = Field(86400.0, gt=0)
    # Active (unrevoked, unexpired) API keys one account may hold; creating one more answers 409 INVALID_STATE.
    max_api_keys_per_user: int = Field(100, ge=1)

    def admin_email_set(self) -> frozenset[str]:
        """``ADMIN_EMAILS`` in canonical form (an entry that is not an address is ignored, never matched)."""
        admins = set()
        for entry in self.admin_emails.split(","):
            if entry.strip():
                try:
                    admins.add(normalize_email(entry))
                except InvalidEmailError:
                    continue
        return frozenset(admins)
