"""Standard Webhooks secrets, bodies and signature headers.

A body is built once, when its delivery is scheduled, and stored: every retry sends the same event under the same
``webhook-id`` (the event id), so a receiver can dedupe; only ``webhook-timestamp``, the signature and a render's
``outputUrl`` (signed anew for each attempt, so it is valid when it arrives) are fresh.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from datetime import UTC, datetime
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")

RENDER_DATA_FIELDS = ("renderId", "status", "outputUrl", "error", "errorCode", "creditsUsed", "projectId")
"""The fields of a render event a receiver gets (API.md); the rest of the event stays internal."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_problem(secret: str) -> str | None:
    """Why a caller-supplied secret is refused, or None when it is ``whsec_`` + base64 of ≥ 24 bytes."""
    if not secret.startswith(SECRET_PREFIX):
        return f"must start with {SECRET_PREFIX}"
    encoded = secret[len(SECRET_PREFIX) :]
    if _BASE64.fullmatch(encoded) is None or len(encoded) % 4:
        return "must be whsec_ followed by standard base64"
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return "must be whsec_ followed by standard base64"
    if len(raw) < MIN_SECRET_BYTES:
        return f"must encode at least {MIN_SECRET_BYTES} random bytes"
    return None


def body(event_type: str, timestamp: datetime, data: dict[str, Any]) -> bytes:
    """``{event, timestamp, data}`` as compact JSON; fields without a value are left out."""
    return orjson.dumps(
        {
            "event": event_type,
            "timestamp": timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": {k: v for k, v in data.items() if v is not None},
        }
    )


def render_body(event_type: str, timestamp: datetime, event_data: dict[str, Any]) -> bytes:
    return body(event_type, timestamp, {k: event_data.get(k) for k in RENDER_DATA_FIELDS})


def headers(secret: str, event_id: str, event_type: str, payload: bytes, now: datetime | None = None) -> dict[str, str]:
    """The delivery headers: ``webhook-id``/``-timestamp``/``-signature`` (Standard Webhooks v1) and the event."""
    sent_at = (now or datetime.now(UTC)).astimezone(UTC)  # Webhook.sign reads the wall time as UTC
    signature = Webhook(secret).sign(msg_id=event_id, timestamp=sent_at, data=payload.decode())
    return {
        "content-type": "application/json",
        "user-agent": "Renderiq-Webhooks/1.0",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
        "x-webhook-event": event_type,
    }
