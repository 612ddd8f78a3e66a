"""``python -m services.webhooks``: serve the webhooks API."""

from services.webhooks.config import Settings
from services.webhooks.main import create_app
from shared.serve import serve

if __name__ == "__main__":
    settings = Settings()
    serve(create_app, port=settings.port, host=settings.bind_host)
