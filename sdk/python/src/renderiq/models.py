"""Typed models of the API's JSON: snake_case attributes, camelCase (or snake_case) on the wire, extra fields kept."""

from __future__ import annotations

from abc import abstractmethod
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

FINAL_STATES = frozenset({"completed", "failed", "canceled"})
"""Render states that never change again."""

T = TypeVar("T")


class Model(BaseModel):
    """Base of every model: accepts camelCase and snake_case keys, keeps fields a newer server adds."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)


class CursorPage(Model, Generic[T]):
    """A page of a cursor-paginated list; ``next_cursor`` is None on the last page."""

    next_cursor: str | None = None

    @property
    @abstractmethod
    def items(self) -> list[T]:
        """The page's entries, whatever the endpoint calls them (``renders``, ``transactions``...)."""


# -- auth ---------------------------------------------------------------------------------------------------------


class Credits(Model):
    balance: int = 0
    total_earned: int = 0
    total_spent: int = 0
    monthly_earned: int = 0
    monthly_spent: int = 0


class User(Model):
    id: str
    email: str
    name: str | None = None
    created_at: datetime
    credits: Credits = Field(default_factory=Credits)


class TokenPair(Model):
    """An access token (``Bearer``, one hour) and the refresh token that renews it once."""

    access_token: str = Field(repr=False)
    refresh_token: str = Field(repr=False)
    expires_at: datetime
    token_type: str = "Bearer"


class AuthResponse(TokenPair):
    user: User


class ApiKey(Model):
    id: str
    name: str
    key_prefix: str
    scopes: list[str]
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    is_active: bool = True
    created_at: datetime


class KeysPage(CursorPage[ApiKey]):
    keys: list[ApiKey]

    @property
    def items(self) -> list[ApiKey]:
        return self.keys


class CreatedApiKey(Model):
    """A new key; ``key`` is shown only once, at creation."""

    id: str
    name: str
    key: str = Field(repr=False)
    key_prefix: str
    scopes: list[str]
    expires_at: datetime | None = None
    created_at: datetime


# -- renders ------------------------------------------------------------------------------------------------------


class RenderCreated(Model):
    render_id: str
    status: str = "pending"
    credits_cost: int
    estimated_time: float


class RenderStatus(Model):
    render_id: str
    status: str
    """``pending``, ``processing``, ``completed``, ``failed`` or ``canceled``."""
    progress: int = 0
    output_url: str | None = None
    error: str | None = None
    error_code: str | None = None
    processing_time: float | None = None
    credits_used: int = 0
    quality: str
    aspect_ratio: str
    style: str
    model: str
    project_id: str | None = None
    platform: str = "unknown"
    plugin_version: str | None = None
    created_at: datetime
    completed_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def is_completed(self) -> bool:
        return self.status == "completed"


class RendersPage(CursorPage[RenderStatus]):
    renders: list[RenderStatus]

    @property
    def items(self) -> list[RenderStatus]:
        return self.renders


# -- projects -----------------------------------------------------------------------------------------------------


class Project(Model):
    id: str
    name: str
    slug: str
    description: str = ""
    created_at: datetime
    render_count: int = 0
    platform: str = "unknown"


class ProjectsPage(Model):
    projects: list[Project]
    total: int
    limit: int
    offset: int


# -- credits ------------------------------------------------------------------------------------------------------


class Transaction(Model):
    """One ledger entry: ``grant``, ``reserve``, ``capture`` or ``release``; ``amount`` is its effect on the balance."""

    id: str
    kind: str
    credits: int
    amount: int
    reference: str
    reason: str | None = None
    created_at: datetime


class TransactionsPage(CursorPage[Transaction]):
    transactions: list[Transaction]

    @property
    def items(self) -> list[Transaction]:
        return self.transactions


# -- webhooks -----------------------------------------------------------------------------------------------------


class Webhook(Model):
    webhook_id: str
    url: str
    events: list[str]
    description: str | None = None
    is_active: bool = True
    disabled_reason: str | None = None
    created_at: datetime
    last_success_at: datetime | None = None
    failure_count: int = 0


class CreatedWebhook(Model):
    """A new endpoint; ``secret`` (``whsec_...``) verifies its deliveries and is shown only here."""

    webhook_id: str
    url: str
    secret: str = Field(repr=False)
    events: list[str]
    description: str | None = None
    created_at: datetime


class DeliveryAttempt(Model):
    at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: int = 0
    response_body: str | None = None


class Delivery(Model):
    delivery_id: str
    event_id: str
    event: str
    status: str
    """``pending``, ``succeeded``, ``failed`` or ``canceled``."""
    attempts: list[DeliveryAttempt] = Field(default_factory=list)
    next_attempt_at: datetime | None = None
    created_at: datetime | None = None


class DeliveriesPage(CursorPage[Delivery]):
    deliveries: list[Delivery]

    @property
    def items(self) -> list[Delivery]:
        return self.deliveries


class DeliveryRef(Model):
    delivery_id: str


class WebhookEventData(Model):
    """``data`` of a delivery: a render's state for ``render.*`` events (a test event has other fields)."""

    render_id: str | None = None
    status: str | None = None
    output_url: str | None = None
    error: str | None = None
    error_code: str | None = None
    credits_used: int | None = None
    project_id: str | None = None


class WebhookEvent(Model):
    """A verified delivery; ``id`` is the ``webhook-id`` header, the same on every retry (dedupe on it)."""

    id: str
    event: str
    timestamp: datetime
    data: WebhookEventData = Field(default_factory=WebhookEventData)


# -- health -------------------------------------------------------------------------------------------------------


class Jwks(Model):
    """The public keys (RFC 7517) that sign access tokens: for a backend that checks tokens itself."""

    keys: list[dict[str, Any]]


class ApiInfo(Model):
    version: str
    platform: str
    version_detected: str | None = None


class Health(Model):
    """``status`` is ``healthy``, ``degraded`` or ``down``; ``services`` maps each dependency to its check."""

    success: bool
    status: str
    timestamp: datetime
    api: ApiInfo
    services: dict[str, str] = Field(default_factory=dict)

    @property
    def is_healthy(self) -> bool:
        return self.status == "healthy"
