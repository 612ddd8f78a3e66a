"""Verifying webhook deliveries (Standard Webhooks signatures, via the ``standardwebhooks`` library)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError as PydanticValidationError
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook
from standardwebhooks.webhooks import WebhookVerificationError as StandardVerificationError

from renderiq.errors import WebhookVerificationError
from renderiq.models import WebhookEvent


def verify_webhook(payload: bytes | str, headers: Mapping[str, str], secret: str) -> WebhookEvent:
    """The delivery's event, once its ``webhook-signature`` matches ``secret`` and its ``webhook-timestamp`` is
    within five minutes; ``WebhookVerificationError`` otherwise. Pass the raw body exactly as received.

    ``secret`` is the endpoint's ``whsec_...`` secret (or the callback secret, for ``callback_url`` deliveries).
    Deliveries are retried with the same ``webhook-id`` (the event's ``id``): process each id once.
    """
    try:
        body = Webhook(secret).verify(payload, dict(headers))
    except (StandardVerificationError, EmptyWebhookSecretError, ValueError, RuntimeError) as exc:
        raise WebhookVerificationError(f"Webhook not verified: {exc}") from exc
    if not isinstance(body, dict):
        raise WebhookVerificationError("Webhook body is not a JSON object")
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        return WebhookEvent.model_validate({**body, "id": lowered["webhook-id"]})
    except PydanticValidationError as exc:
        raise WebhookVerificationError(f"Webhook body is not an event: {exc.error_count()} invalid fields") from exc
