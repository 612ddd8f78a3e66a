"""``python -m services.renders``: serve the renders API."""

from services.renders.config import Settings
from services.renders.main import create_app
from shared.serve import serve

if __name__ == "__main__":
    serve(create_app, port=Settings().port)
