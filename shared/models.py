"""Tables every service with a schema may include: the outbox and the processed-events record."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import registry
from sqlmodel import SQLModel

__all__ = ["SQLModel", "registry_for_schema"]


def registry_for_schema() -> registry:
    """A registry (and MetaData) of a service's own, so services never share table definitions in one process."""
    return registry(metadata=MetaData())
