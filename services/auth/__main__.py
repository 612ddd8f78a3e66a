"""``python -m services.auth``: serve the auth API."""

from services.auth.config import Settings
from services.auth.main import create_app
from shared.serve import serve

if __name__ == "__main__":
    serve(create_app, port=Settings().port)
