"""``python -m services.telemetry``: serve the telemetry API."""

from services.telemetry.config import Settings
from services.telemetry.main import create_app
from shared.serve import serve

if __name__ == "__main__":
    settings = Settings()
    serve(create_app, port=settings.port, host=settings.bind_host)
