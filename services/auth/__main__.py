"""``python -m services.auth``: serve the auth API."""

from services.auth.config import Settings
from services.auth.main import create_app
from shared.serve import serve

if __name__ == "__main__":
    settings = Settings()
    serve(create_app, port=settings.port, host=settings.bind_host)
