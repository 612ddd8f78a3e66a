"""``python -m services.gateway``: serve the public API."""

from services.gateway.config import Settings
from services.gateway.main import create_app
from shared.serve import serve

if __name__ == "__main__":
    settings = Settings()
    serve(create_app, port=settings.port, host=settings.host, forwarded_allow_ips=settings.forwarded_allow_ips)
