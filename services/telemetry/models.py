"""Tables of the ``telemetry`` schema."""

from __future__ import annotations

from shared.consumer import processed_events_table
from shared.models import SQLModel, registry_for_schema

SCHEMA = "telemetry"
schema_registry = registry_for_schema()
metadata = schema_registry.metadata


class TelemetryModel(SQLModel, registry=schema_registry):
    """Base of the telemetry schema's SQLModel tables."""


processed_events = processed_events_table(metadata)
