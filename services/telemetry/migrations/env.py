"""Alembic environment of the ``telemetry`` schema."""

from services.telemetry.models import metadata
from shared.migrations import run_env

run_env(metadata)
