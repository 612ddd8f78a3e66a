"""``python -m services.renders``: serve the renders API."""

from services.renders.config import Settings
from services.renders.main import create_app
from shared.serve import serve

if __name__ == "__main__":
    settings = Settings()
    serve(create_app, port=settings.port, host=settings.bind_host)
