"""Settings of the gateway (env prefix ``GATEWAY_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = 8080
    # Probes (/health/live, /health/ready) and /metrics, on BIND_HOST: never on the public port.
    internal_port: int = 8090
    # Signs the internal identity of every proxied request (EdDSA); no other process holds it. Empty: the dev key
    # (APP_ENV=dev only). Its public half is INTERNAL_IDENTITY_PUBLIC_KEY.
    identity_private_key: str = ""
    auth_url: str = "http://127.0.0.1:8101"
    renders_url: str = "http://127.0.0.1:8102"
    render_worker_url: str = "http://127.0.0.1:8103"
    credits_url: str = "http://127.0.0.1:8104"
    webhooks_url: str = "http://127.0.0.1:8105"
    webhooks_dispatcher_url: str = "http://127.0.0.1:8106"
    telemetry_url: str = "http://127.0.0.1:8107"
    upstream_timeout_seconds: float = 60.0
    upstream_connect_timeout_seconds: float = 2.0
    upstream_pool_wait_seconds: float = 5.0
    forwarded_allow_ips: str = "127.0.0.1"
    # One connection pool per service: a slow service or a flood aimed at one exhausts only its own pool.
    upstream_max_connections_per_service: int = 200
    internal_max_connections: int = 100  # the gateway's own calls (key checks, health, documents), apart
    health_check_timeout_seconds: float = 1.0
    health_cache_seconds: float = 1.0
    # Access tokens (must match the auth service's issuer and audience).
    jwt_issuer: str = "plugin-platform"
    jwt_audience: str = "plugin-api"
    jwks_min_refetch_seconds: float = 5.0
    jwks_refresh_seconds: float = 300.0
    jwt_cache_max_entries: int = 100_000
    # API keys: verified by auth on a miss, then cached; revocations arrive as events and drop entries at once.
    api_key_cache_seconds: float = 60.0
    api_key_negative_cache_seconds: float = 5.0
    api_key_cache_max_entries: int = 100_000
    key_usage_flush_seconds: float = 5.0
    key_events_ready_grace_seconds: float = 30.0
    # Rate limits (sliding window in Redis, shared by every replica).
    rate_limit_per_minute: int = 600
    auth_rate_limit_per_minute: int = 10
    auth_ip_rate_limit_per_minute: int = 60
    rate_limit_window_seconds: int = 60
    auth_failures_per_minute: int = 60  # per client IP and replica; then 429 without checking credentials
    max_auth_body_bytes: int = 64 * 1024
    max_body_bytes: int = 1024 * 1024  # any JSON request; render uploads have their own limit below
    request_events: bool = True  # publish gateway.requests (telemetry); off = no per-request event at all
    max_render_body_bytes: int = 70 * 1024 * 1024  # MAX_UPLOAD_BYTES (50 MB) as base64 text, plus the form
    # Per caller (account, whatever key or token; the client address when anonymous) and per replica: requests
    # open at once, and event streams open at once (counted apart). Beyond either, 429 with Retry-After.
    max_requests_per_caller: int = 32
    max_streams_per_caller: int = 8
    # A body is received whole before it is forwarded; it must arrive at this average pace after the grace period,
    # and completely within the timeout, else 408 and the connection is closed.
    body_min_bytes_per_second: float = 16 * 1024
    body_grace_seconds: float = 5.0
    body_timeout_seconds: float = 300.0

    def upstreams(self) -> dict[str, str]:
        """Every process behind the gateway by name, for routing and health."""
        return {
            "auth": self.auth_url,
            "renders": self.renders_url,
            "render-worker": self.render_worker_url,
            "credits": self.credits_url,
            "webhooks": self.webhooks_url,
            "webhooks-dispatcher": self.webhooks_dispatcher_url,
            "telemetry": self.telemetry_url,
        }
