"""Alembic environment of the ``webhooks`` schema."""

from services.webhooks.models import metadata
from shared.migrations import run_env

run_env(metadata)
