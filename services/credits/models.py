"""Tables of the ``credits`` schema."""

from __future__ import annotations

from shared.consumer import processed_events_table
from shared.models import SQLModel, registry_for_schema

SCHEMA = "credits"
schema_registry = registry_for_schema()
metadata = schema_registry.metadata


class CreditsModel(SQLModel, registry=schema_registry):
    """Base of the credits schema's SQLModel tables."""


processed_events = processed_events_table(metadata)
