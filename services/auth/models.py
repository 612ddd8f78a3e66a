"""Tables of the ``auth`` schema."""

from __future__ import annotations

from shared.models import SQLModel, registry_for_schema
from shared.outbox import outbox_table

SCHEMA = "auth"
schema_registry = registry_for_schema()
metadata = schema_registry.metadata


class AuthModel(SQLModel, registry=schema_registry):
    """Base of the auth schema's SQLModel tables."""


outbox = outbox_table(metadata)
