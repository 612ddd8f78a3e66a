"""Renderiq plugin SDK: ``Client`` / ``AsyncClient`` over the plugin API, typed models and errors, webhook checks.

from renderiq import Client

with Client("http://127.0.0.1:8080", api_key="rk_live_...", platform="sketchup", plugin_version="1.4.2") as rq:
    render = rq.renders.create("viewport.png", quality="standard", style="dramatic")
    render.wait()
    render.download("render.png")
"""

from renderiq._core import Credentials
from renderiq._endpoints import AspectRatio, Follow, Quality, RenderOptions, RenderState, Style
from renderiq._version import __version__
from renderiq.async_client import AsyncClient, AsyncRender
from renderiq.client import Client, Render
from renderiq.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConflictError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    RenderiqError,
    RenderNotCompletedError,
    RenderTimeoutError,
    ServerError,
    ServiceUnavailableError,
    ValidationError,
    WebhookVerificationError,
)
from renderiq.images import ImageInput
from renderiq.models import (
    ApiInfo,
    ApiKey,
    AuthResponse,
    CreatedApiKey,
    CreatedWebhook,
    Credits,
    DeliveriesPage,
    Delivery,
    DeliveryAttempt,
    DeliveryRef,
    Health,
    Jwks,
    Project,
    ProjectsPage,
    RenderCreated,
    RendersPage,
    RenderStatus,
    TokenPair,
    Transaction,
    TransactionsPage,
    User,
    Webhook,
    WebhookEvent,
    WebhookEventData,
)
from renderiq.retries import RetryPolicy
from renderiq.webhooks import verify_webhook

SCOPES = ("renders:create", "renders:read", "projects:read", "projects:write", "webhook:write")
"""Every API key scope."""

__all__ = [
    "SCOPES",
    "APIConnectionError",
    "APITimeoutError",
    "ApiInfo",
    "ApiKey",
    "AspectRatio",
    "AsyncClient",
    "AsyncRender",
    "AuthResponse",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "CreatedApiKey",
    "CreatedWebhook",
    "Credentials",
    "Credits",
    "DeliveriesPage",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryRef",
    "Follow",
    "Health",
    "IdempotencyConflictError",
    "ImageInput",
    "InsufficientCreditsError",
    "Jwks",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Project",
    "ProjectsPage",
    "Quality",
    "RateLimitError",
    "Render",
    "RenderCreated",
    "RenderNotCompletedError",
    "RenderOptions",
    "RenderState",
    "RenderStatus",
    "RenderTimeoutError",
    "RenderiqError",
    "RendersPage",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailableError",
    "Style",
    "TokenPair",
    "Transaction",
    "TransactionsPage",
    "User",
    "ValidationError",
    "Webhook",
    "WebhookEvent",
    "WebhookEventData",
    "WebhookVerificationError",
    "__version__",
    "verify_webhook",
]
