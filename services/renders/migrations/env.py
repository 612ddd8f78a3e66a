"""Alembic environment of the ``renders`` schema."""

from services.renders.models import metadata
from shared.migrations import run_env

run_env(metadata)
