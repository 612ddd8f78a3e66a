"""Tables of the ``renders`` schema (projects, renders, idempotency keys, outbox, processed events) and the API's
request/response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from pydantic import Field as PydanticField
from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from shared.consumer import processed_events_table
from shared.models import SQLModel, new_id, registry_for_schema, timestamp_column
from shared.outbox import outbox_broker_table, outbox_table

SCHEMA = "renders"
schema_registry = registry_for_schema()
metadata = schema_registry.metadata

RenderStatusName = Literal["pending", "processing", "completed", "failed", "canceled"]
FINAL_STATES = frozenset({"completed", "failed", "canceled"})
PLATFORMS = ("sketchup", "revit", "autocad", "rhino", "archicad", "blender", "unknown")


class RendersModel(SQLModel, registry=schema_registry):
    """Base of the renders schema's SQLModel tables."""


class Project(RendersModel, table=True):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("user_id", "slug"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    user_id: str = Field(index=True)
    name: str
    slug: str
    description: str = ""
    platform: str = "unknown"
    created_at: datetime | None = Field(default=None, sa_column=timestamp_column(False, True))


class Render(RendersModel, table=True):
    __tablename__ = "renders"
    __table_args__ = (
        Index("ix_renders_user_created", "user_id", "created_at", "id"),
        Index("ix_renders_processing_heartbeat", "heartbeat_at", postgresql_where="status = 'processing'"),
    )

    id: str = Field(default_factory=new_id, primary_key=True)
    user_id: str
    project_id: str | None = Field(default=None, index=True)
    status: str = "pending"
    progress: int = 0
    quality: str
    aspect_ratio: str
    style: str
    model: str
    prompt: str | None = None
    platform: str = "unknown"
    plugin_version: str | None = None
    credits_cost: int
    credits_used: int = 0
    input_key: str
    input_type: str
    output_key: str | None = None
    error: str | None = None
    error_code: str | None = None
    attempts: int = 0
    claim_token: str | None = None
    processing_time: float | None = None
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSONB, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=timestamp_column(False, True))
    started_at: datetime | None = Field(default=None, sa_column=timestamp_column())
    heartbeat_at: datetime | None = Field(default=None, sa_column=timestamp_column())
    completed_at: datetime | None = Field(default=None, sa_column=timestamp_column())
    requeued_at: datetime | None = Field(default=None, sa_column=timestamp_column())
    """When the watchdog last published the job again (at most once per lease / pending period)."""
    files_deleted_at: datetime | None = Field(default=None, sa_column=timestamp_column())
    """When retention removed the input and output files (the output URL is then gone too)."""


class IdempotencyKey(RendersModel, table=True):
    __tablename__ = "idempotency_keys"

    user_id: str = Field(primary_key=True)
    key: str = Field(sa_column=Column(Text, primary_key=True))
    request_hash: str
    render_id: str
    created_at: datetime | None = Field(default=None, sa_column=timestamp_column(False, True))


outbox = outbox_table(metadata)
outbox_broker = outbox_broker_table(metadata)
processed_events = processed_events_table(metadata)


# --- API bodies ---------------------------------------------------------------------------------------------------
class RenderAccepted(BaseModel):
    renderId: str
    status: Literal["pending"] = "pending"
    creditsCost: int
    estimatedTime: float


class RenderStatus(BaseModel):
    renderId: str
    status: RenderStatusName
    progress: int
    outputUrl: str | None = None
    error: str | None = None
    errorCode: str | None = None
    processingTime: float | None = None
    creditsUsed: int
    quality: str
    aspectRatio: str
    style: str
    model: str
    projectId: str | None = None
    platform: str
    pluginVersion: str | None = None
    createdAt: datetime
    completedAt: datetime | None = None


class RenderPage(BaseModel):
    renders: list[RenderStatus]
    nextCursor: str | None


class ProjectIn(BaseModel):
    name: str = PydanticField(min_length=1, max_length=100)
    description: str | None = PydanticField(default=None, max_length=2000)
    platform: Literal["sketchup", "revit", "autocad", "rhino", "archicad", "blender", "unknown"] | None = None


class ProjectOut(BaseModel):
    id: str
    name: str
    slug: str
    description: str
    createdAt: datetime
    renderCount: int
    platform: str


class ProjectPage(BaseModel):
    projects: list[ProjectOut]
    total: int
    limit: int
    offset: int
