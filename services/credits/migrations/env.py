"""Alembic environment of the ``credits`` schema."""

from services.credits.models import metadata
from shared.migrations import run_env

run_env(metadata)
