"""``python -m services.gateway``: serve the public API, and probes and metrics on the internal listener."""

from services.gateway.config import Settings
from services.gateway.main import create_listeners
from shared.serve import serve

if __name__ == "__main__":
    settings = Settings()
    serve(
        create_listeners,
        port=settings.port,
        host=settings.host,
        internal_port=settings.internal_port,
        internal_host=settings.bind_host,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
