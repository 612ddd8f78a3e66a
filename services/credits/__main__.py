"""``python -m services.credits``: serve the credits API."""

from services.credits.config import Settings
from services.credits.main import create_app
from shared.serve import serve

if __name__ == "__main__":
    settings = Settings()
    serve(create_app, port=settings.port, host=settings.bind_host)
