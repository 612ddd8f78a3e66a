"""The routing table: which service owns a public path, and what a caller needs to reach it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

ROUTES: tuple[tuple[str, str], ...] = (
    ("/api/plugins/auth", "auth"),
    ("/api/plugins/keys", "auth"),
    ("/.well-known/jwks.json", "auth"),
    ("/api/plugins/renders", "renders"),
    ("/api/plugins/projects", "renders"),
    ("/api/plugins/credits", "credits"),
    ("/api/plugins/webhooks", "webhooks"),
    ("/api/admin/telemetry", "telemetry"),
    ("/admin", "telemetry"),
)

AUTH_ENTRY_PATHS = frozenset(
    {"/api/plugins/auth/signup", "/api/plugins/auth/signin", "/api/plugins/auth/refresh", "/api/plugins/auth/signout"}
)


class Access(Enum):
    PUBLIC = "public"  # no credentials (health, JWKS, dashboard page)
    CREDENTIALS = "credentials"  # sign-in family: no credentials, strict per IP+email rate limit
    USER = "user"  # any authenticated caller, any scope
    SCOPE = "scope"  # an authenticated caller holding ``scope``
    BEARER = "bearer"  # an account's own access token (API keys cannot manage keys)
    OPERATOR = "operator"  # an operator's access token


@dataclass(frozen=True, slots=True)
class Policy:
    access: Access
    scope: str | None = None


def route_for(path: str) -> str | None:
    """The owning service of ``path``, matching whole path segments (``/api/plugins/keysX`` matches nothing)."""
    for prefix, service in ROUTES:
        if path == prefix or path.startswith(prefix + "/"):
            return service
    return None


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def policy_for(method: str, path: str) -> Policy:
    """API.md's tables: the scope each route needs (Bearer tokens carry every scope of their user)."""
    reading = method in ("GET", "HEAD", "OPTIONS")
    if path in AUTH_ENTRY_PATHS:
        return Policy(Access.CREDENTIALS)
    if path in ("/.well-known/jwks.json", "/api/plugins/health") or _under(path, "/admin"):
        return Policy(Access.PUBLIC)
    if _under(path, "/api/plugins/keys"):
        return Policy(Access.BEARER)
    if _under(path, "/api/plugins/renders"):
        return Policy(Access.SCOPE, "renders:read" if reading else "renders:create")
    if _under(path, "/api/plugins/projects"):
        return Policy(Access.SCOPE, "projects:read" if reading else "projects:write")
    if _under(path, "/api/plugins/webhooks"):
        return Policy(Access.SCOPE, "webhook:write")
    if _under(path, "/api/admin"):
        return Policy(Access.OPERATOR)
    return Policy(Access.USER)  # /auth/me, /credits and anything else a service adds


def is_event_stream(method: str, path: str) -> bool:
    """A request answered by a long-lived ``text/event-stream`` (counted against the caller's stream cap)."""
    return method == "GET" and _under(path, "/api/plugins/renders") and path.endswith("/events")
