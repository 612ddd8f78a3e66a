"""Tables of the ``webhooks`` schema."""

from __future__ import annotations

from shared.consumer import processed_events_table
from shared.models import SQLModel, registry_for_schema
from shared.outbox import outbox_table

SCHEMA = "webhooks"
schema_registry = registry_for_schema()
metadata = schema_registry.metadata


class WebhooksModel(SQLModel, registry=schema_registry):
    """Base of the webhooks schema's SQLModel tables."""


outbox = outbox_table(metadata)
processed_events = processed_events_table(metadata)
