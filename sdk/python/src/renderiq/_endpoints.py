"""Every endpoint of the plugin API as a ``Call``: the one place requests are built and answers are read.

``Client`` and ``AsyncClient`` only send these; neither knows a path, a field name or a response shape.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, TypedDict
from urllib.parse import quote

import httpx

from renderiq import models
from renderiq._call import (
    Call,
    body_of,
    content,
    data_list_of,
    data_of,
    nothing,
    query,
    raw,
)
from renderiq.images import ImageInput, load_image

API = "/api/plugins"

Quality = Literal["standard", "high", "ultra"]
AspectRatio = Literal["16:9", "4:3", "1:1", "9:16", "3:2", "2:3"]
Style = Literal["photorealistic", "dramatic", "soft", "studio", "natural"]
RenderState = Literal["pending", "processing", "completed", "failed", "canceled"]
Follow = Literal["sse", "poll"]


class RenderOptions(TypedDict, total=False):
    """Options of ``renders.create``; the server's defaults apply to those left out (or None)."""

    image_type: str | None
    """``image/png``, ``image/jpeg`` or ``image/webp``; inferred from the bytes or the file name when left out."""
    filename: str | None
    prompt: str | None
    quality: Quality | None
    aspect_ratio: AspectRatio | None
    style: Style | None
    model: str | None
    project_id: str | None
    callback_url: str | None
    idempotency_key: str | None
    """Defaults to a fresh UUID per create, reused by that create's retries."""


def _id(value: str) -> str:
    return quote(value, safe="")


# -- auth ---------------------------------------------------------------------------------------------------------


def signup(email: str, password: str, name: str | None) -> Call[models.AuthResponse]:
    body = {"email": email, "password": password, **({"name": name} if name is not None else {})}
    return Call("POST", f"{API}/auth/signup", body_of(models.AuthResponse), json=body, authenticated=False)


def signin(email: str, password: str) -> Call[models.AuthResponse]:
    body = {"email": email, "password": password}
    return Call("POST", f"{API}/auth/signin", body_of(models.AuthResponse), json=body, authenticated=False)


def refresh(refresh_token: str) -> Call[models.TokenPair]:
    body = {"refresh_token": refresh_token}
    return Call("POST", f"{API}/auth/refresh", body_of(models.TokenPair), json=body, authenticated=False)


def signout(refresh_token: str) -> Call[None]:
    return Call("POST", f"{API}/auth/signout", nothing, json={"refresh_token": refresh_token}, authenticated=False)


def me() -> Call[models.User]:
    return Call("GET", f"{API}/auth/me", body_of(models.User, "user"))


def jwks() -> Call[models.Jwks]:
    """At the gateway's root, not under ``/api/plugins``."""
    return Call("GET", "/.well-known/jwks.json", body_of(models.Jwks), authenticated=False)


# -- API keys -----------------------------------------------------------------------------------------------------


def create_key(name: str, scopes: list[str], expires_at: datetime | None) -> Call[models.CreatedApiKey]:
    body = {"name": name, "scopes": scopes, "expiresAt": expires_at.isoformat() if expires_at else None}
    return Call("POST", f"{API}/keys", data_of(models.CreatedApiKey), json=body)


def list_keys(limit: int | None, cursor: str | None) -> Call[models.KeysPage]:
    """``data`` is the page's keys (a list, as it always was); the cursor of the next page sits beside it."""

    def parse(response: httpx.Response) -> models.KeysPage:
        body = response.json()
        return models.KeysPage(keys=body["data"], next_cursor=body.get("nextCursor"))

    return Call("GET", f"{API}/keys", parse, params=query(limit=limit, cursor=cursor))


def delete_key(key_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/keys/{_id(key_id)}", nothing)


# -- renders ------------------------------------------------------------------------------------------------------


def create_render(image: ImageInput, options: RenderOptions) -> Call[models.RenderCreated]:
    """A multipart upload (the image as a file part); the ``Idempotency-Key`` is fixed here, once per create."""
    upload = load_image(image, options.get("image_type"), options.get("filename"))
    fields = {
        "uploadedImageType": upload.media_type,
        "prompt": options.get("prompt"),
        "quality": options.get("quality"),
        "aspectRatio": options.get("aspect_ratio"),
        "style": options.get("style"),
        "model": options.get("model"),
        "projectId": options.get("project_id"),
        "callback_url": options.get("callback_url"),
    }
    return Call(
        "POST",
        f"{API}/renders",
        data_of(models.RenderCreated),
        data={k: v for k, v in fields.items() if v is not None},
        files={"uploadedImageData": (upload.filename, upload.content, upload.media_type)},
        headers={"Idempotency-Key": options.get("idempotency_key") or str(uuid.uuid4())},
    )


def get_render(render_id: str) -> Call[models.RenderStatus]:
    return Call("GET", f"{API}/renders/{_id(render_id)}", data_of(models.RenderStatus))


def list_renders(
    status: str | None, project_id: str | None, limit: int | None, cursor: str | None
) -> Call[models.RendersPage]:
    params = query(status=status, projectId=project_id, limit=limit, cursor=cursor)
    return Call("GET", f"{API}/renders", data_of(models.RendersPage), params=params)


def cancel_render(render_id: str) -> Call[models.RenderStatus]:
    return Call("DELETE", f"{API}/renders/{_id(render_id)}", data_of(models.RenderStatus))


def render_events(render_id: str, read_timeout: float) -> Call[httpx.Response]:
    """The open ``text/event-stream`` response (read it with ``sse.SSEDecoder``)."""
    return Call(
        "GET",
        f"{API}/renders/{_id(render_id)}/events",
        raw,
        headers={"Accept": "text/event-stream"},
        stream=True,
        read_timeout=read_timeout,
    )


def download(url: str) -> Call[bytes]:
    """A signed output URL: fetched without credentials (they would break a presigned S3 URL)."""
    return Call("GET", url, content, authenticated=False, headers={"Accept": "*/*"})


# -- projects -----------------------------------------------------------------------------------------------------


def list_projects(platform: str | None, limit: int | None, offset: int | None) -> Call[models.ProjectsPage]:
    params = query(platform=platform, limit=limit, offset=offset)
    return Call("GET", f"{API}/projects", data_of(models.ProjectsPage), params=params)


def create_project(name: str, description: str | None, platform: str | None) -> Call[models.Project]:
    body = {"name": name, **query(description=description, platform=platform)}
    return Call("POST", f"{API}/projects", data_of(models.Project), json=body)


def get_project(project_id: str) -> Call[models.Project]:
    return Call("GET", f"{API}/projects/{_id(project_id)}", data_of(models.Project))


def delete_project(project_id: str) -> Call[None]:
    return Call("DELETE", f"{API}/projects/{_id(project_id)}", nothing)


# -- credits ------------------------------------------------------------------------------------------------------


def get_credits() -> Call[models.Credits]:
    return Call("GET", f"{API}/credits", data_of(models.Credits))


def list_transactions(limit: int | None, cursor: str | None) -> Call[models.TransactionsPage]:
    params = query(limit=limit, cursor=cursor)
    return Call("GET", f"{API}/credits/transactions", data_of(models.TransactionsPage), params=params)


# -- webhooks -----------------------------------------------------------------------------------------------------

WEBHOOKS = f"{API}/webhooks"


def register_webhook(
    url: str, events: list[str], secret: str | None, description: str | None
) -> Call[models.CreatedWebhook]:
    body = {"url": url, "events": events, **query(secret=secret, description=description)}
    return Call("POST", f"{WEBHOOKS}/register", data_of(models.CreatedWebhook), json=body)


def list_webhooks() -> Call[list[models.Webhook]]:
    return Call("GET", WEBHOOKS, data_list_of(models.Webhook))


def delete_webhook(webhook_id: str) -> Call[None]:
    return Call("DELETE", f"{WEBHOOKS}/{_id(webhook_id)}", nothing)


def test_webhook(webhook_id: str) -> Call[models.DeliveryRef]:
    return Call("POST", f"{WEBHOOKS}/{_id(webhook_id)}/test", data_of(models.DeliveryRef))


def enable_webhook(webhook_id: str) -> Call[models.Webhook]:
    return Call("POST", f"{WEBHOOKS}/{_id(webhook_id)}/enable", data_of(models.Webhook))


def list_deliveries(webhook_id: str, limit: int | None, cursor: str | None) -> Call[models.DeliveriesPage]:
    params = query(limit=limit, cursor=cursor)
    return Call("GET", f"{WEBHOOKS}/{_id(webhook_id)}/deliveries", data_of(models.DeliveriesPage), params=params)


def resend_delivery(webhook_id: str, delivery_id: str) -> Call[models.DeliveryRef]:
    path = f"{WEBHOOKS}/{_id(webhook_id)}/deliveries/{_id(delivery_id)}/resend"
    return Call("POST", path, data_of(models.DeliveryRef))


def callback_secret() -> Call[str]:
    return Call("GET", f"{WEBHOOKS}/callback-secret", lambda response: str(response.json()["data"]["secret"]))


# -- health -------------------------------------------------------------------------------------------------------


def health() -> Call[models.Health]:
    """Answered without credentials; a ``down`` platform answers 503 with the same body (not retried)."""
    down = frozenset({503})
    return Call("GET", f"{API}/health", body_of(models.Health), authenticated=False, retry=False, accept=down)
