"""HTTP routes of the webhooks service (thin: parse, call ``service``, shape the response).

``test`` and ``resend`` are limited per endpoint (``WEBHOOKS_MANUAL_SENDS_PER_MINUTE``, 429 beyond); answers that
carry a secret are ``Cache-Control: no-store``.

Public routes (``/api/plugins/webhooks``) arrive through the gateway, which has already required the
``webhook:write`` scope; every route reads and changes only the caller's own webhooks (another user's answer 404).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from services.webhooks import service
from services.webhooks.config import Settings
from services.webhooks.deps import SessionDep, UserIdDep
from services.webhooks.models import (
    CallbackSecret,
    DeliveriesPage,
    DeliveryRef,
    RegisteredWebhook,
    RegisterWebhookRequest,
    WebhookView,
)
from shared.errors import documented_errors
from shared.responses import Envelope, JsonResponse, Message, ok

router = APIRouter(prefix="/api/plugins/webhooks")

IdPath = Annotated[str, Path(min_length=1, max_length=100)]


def no_store(response: JsonResponse) -> JsonResponse:
    """A response carrying a secret: no cache (browser, proxy or CDN) may keep it."""
    response.headers["Cache-Control"] = "no-store"
    return response


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.post(
    "/register",
    summary="Register a webhook",
    status_code=201,
    response_model=Envelope[RegisteredWebhook],
    responses=documented_errors(409),
)
async def register(
    body: RegisterWebhookRequest, user_id: UserIdDep, session: SessionDep, request: Request
) -> JsonResponse:
    settings = _settings(request)
    created = await service.register(
        session,
        user_id,
        body,
        allow_private=settings.allow_private_networks,
        max_endpoints=settings.max_endpoints_per_user,
    )
    return no_store(ok(created, 201))


@router.get("", summary="List webhooks", response_model=Envelope[list[WebhookView]])
async def list_webhooks(user_id: UserIdDep, session: SessionDep) -> JsonResponse:
    return ok(await service.list_webhooks(session, user_id))


@router.get("/callback-secret", summary="Secret of callback_url deliveries", response_model=Envelope[CallbackSecret])
async def callback_secret(user_id: UserIdDep, session: SessionDep) -> JsonResponse:
    return no_store(ok(CallbackSecret(secret=await service.callback_secret(session, user_id))))


@router.delete("/{webhook_id}", summary="Delete a webhook", response_model=Message)
async def delete(webhook_id: IdPath, user_id: UserIdDep, session: SessionDep) -> JsonResponse:
    await service.delete(session, user_id, webhook_id)
    return JsonResponse({"success": True, "message": "Webhook deleted"})


@router.post("/{webhook_id}/test", summary="Send a test event", status_code=202, response_model=Envelope[DeliveryRef])
async def send_test(webhook_id: IdPath, user_id: UserIdDep, session: SessionDep, request: Request) -> JsonResponse:
    per_minute = _settings(request).manual_sends_per_minute
    delivery_id = await service.send_test(session, user_id, webhook_id, per_minute=per_minute)
    return ok(DeliveryRef(delivery_id=delivery_id), 202)


@router.post("/{webhook_id}/enable", summary="Re-enable a webhook", response_model=Envelope[WebhookView])
async def enable(webhook_id: IdPath, user_id: UserIdDep, session: SessionDep) -> JsonResponse:
    return ok(await service.enable(session, user_id, webhook_id))


@router.get("/{webhook_id}/deliveries", summary="Delivery log", response_model=Envelope[DeliveriesPage])
async def deliveries(
    webhook_id: IdPath,
    user_id: UserIdDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JsonResponse:
    return ok(await service.list_deliveries(session, user_id, webhook_id, limit, cursor))


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/resend",
    summary="Resend a delivery",
    status_code=202,
    response_model=Envelope[DeliveryRef],
    responses=documented_errors(409),
)
async def resend(
    webhook_id: IdPath, delivery_id: IdPath, user_id: UserIdDep, session: SessionDep, request: Request
) -> JsonResponse:
    per_minute = _settings(request).manual_sends_per_minute
    await service.resend(session, user_id, webhook_id, delivery_id, per_minute=per_minute)
    return ok(DeliveryRef(delivery_id=delivery_id), 202)
