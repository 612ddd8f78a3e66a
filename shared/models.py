"""Tables every service with a schema may include: the outbox and the processed-events record."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, func
from sqlalchemy.orm import registry
from sqlmodel import SQLModel

__all__ = ["SQLModel", "new_id", "registry_for_schema", "timestamp_column"]


def new_id() -> str:
    """Primary keys are UUID4 strings: opaque to callers, safe to expose, generated without a round trip."""
    return str(uuid.uuid4())


def timestamp_column(nullable: bool = True, default_now: bool = False) -> Any:
    """A ``timestamptz`` column for a SQLModel field (``sa_column=``), optionally defaulting to ``now()``."""
    return Column(DateTime(timezone=True), nullable=nullable, server_default=func.now() if default_now else None)


def registry_for_schema() -> registry:
    """A registry (and MetaData) of a service's own, so services never share table definitions in one process."""
    return registry(metadata=MetaData())
