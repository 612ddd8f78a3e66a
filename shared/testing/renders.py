"""Helpers for render tests: images made in memory, submissions, waiting for a final state."""

from __future__ import annotations

import asyncio
import base64
import io
import time
import uuid
from typing import Any

import httpx
from PIL import Image, ImageDraw
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.renders.models import Render
from shared.db import unit_of_work

GEMINI_MODEL = "gemini-2.5-flash-image"


def image_bytes(width: int = 800, height: int = 450, fmt: str = "PNG") -> bytes:
    """A small synthetic 'viewport screenshot': gradient plus shapes, so resampling and grading have work."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 8):
        draw.rectangle([x, 0, x + 8, height], fill=(x * 255 // width, 120, 255 - x * 255 // width))
    draw.ellipse([width // 4, height // 4, width // 2, height // 2], fill=(240, 230, 200))
    draw.rectangle([width // 2, height // 3, width * 3 // 4, height * 5 // 6], fill=(40, 60, 80))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def submission(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uploadedImageData": base64.b64encode(image_bytes()).decode(),
        "uploadedImageType": "image/png",
        "quality": "standard",
        "aspectRatio": "16:9",
        "style": "photorealistic",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def wait_final(
    client: httpx.AsyncClient, render_id: str, headers: dict[str, str], wait_seconds: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + wait_seconds
    while True:
        response = await client.get(f"/api/plugins/renders/{render_id}", headers=headers)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        if data["status"] in ("completed", "failed", "canceled"):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"render {render_id} still {data['status']} after {wait_seconds}s")
        await asyncio.sleep(0.2)


async def balance(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, int]:
    response = await client.get("/api/plugins/credits", headers=headers)
    assert response.status_code == 200, response.text
    data: dict[str, int] = response.json()["data"]
    return data


async def insert_render(sessions: async_sessionmaker[AsyncSession], **values: Any) -> Render:
    """A render row written straight into the renders schema (a test's setup: any status, any timestamps)."""
    render_id = str(uuid.uuid4())
    defaults: dict[str, Any] = {
        "id": render_id,
        "user_id": "u1",
        "quality": "standard",
        "aspect_ratio": "16:9",
        "style": "soft",
        "model": "local",
        "credits_cost": 5,
        "input_key": f"renders/{render_id}/input.png",
        "input_type": "image/png",
    }
    render = Render(**{**defaults, **values})
    async with unit_of_work(sessions) as session:
        session.add(render)
    return render
