"""The routing table: which service owns which public path. Paths are forwarded unchanged."""

from __future__ import annotations

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


def route_for(path: str) -> str | None:
    """The owning service of ``path``, matching whole path segments (``/api/plugins/keysX`` matches nothing)."""
    for prefix, service in ROUTES:
        if path == prefix or path.startswith(prefix + "/"):
            return service
    return None
