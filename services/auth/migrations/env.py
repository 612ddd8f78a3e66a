"""Alembic environment of the ``auth`` schema."""

from services.auth.models import metadata
from shared.migrations import run_env

run_env(metadata)
