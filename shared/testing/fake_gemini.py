"""A local stand-in for the Gemini image API (``generateContent``), for tests of the whole stack.

It answers like the real API: an image part (``inlineData``) for a normal request, and the real API's failure
shapes when the prompt asks for one: ``FAIL_400`` (a rejected request), ``FAIL_503`` (unavailable),
``FAIL_SAFETY`` (a blocked prompt), ``SLOW_<seconds>`` (a long render, for cancel and crash tests).
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from typing import Any

from fastapi import FastAPI, Request
from PIL import Image
from starlette.responses import JSONResponse

SLOW = re.compile(r"SLOW_(\d+(?:\.\d+)?)")


def _png(width: int = 640, height: int = 360) -> str:
    image = Image.new("RGB", (width, height), (90, 120, 160))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def build_fake_gemini(api_key: str = "fake-gemini-key-for-tests") -> FastAPI:
    app = FastAPI()
    app.state.requests = []

    @app.post("/v1beta/models/{model_action}")
    async def generate(model_action: str, request: Request) -> JSONResponse:
        if request.headers.get("x-goog-api-key") != api_key:
            return JSONResponse(
                {"error": {"code": 403, "message": "API key not valid", "status": "PERMISSION_DENIED"}}, 403
            )
        body: dict[str, Any] = await request.json()
        app.state.requests.append({"path": model_action, "body": body})
        text = " ".join(p.get("text", "") for c in body.get("contents", []) for p in c.get("parts", []))
        if slow := SLOW.search(text):
            await asyncio.sleep(float(slow.group(1)))
        if "FAIL_400" in text:
            return JSONResponse({"error": {"code": 400, "message": "Bad request", "status": "INVALID_ARGUMENT"}}, 400)
        if "FAIL_503" in text:
            return JSONResponse({"error": {"code": 503, "message": "Overloaded", "status": "UNAVAILABLE"}}, 503)
        if "FAIL_SAFETY" in text:
            return JSONResponse({"promptFeedback": {"blockReason": "SAFETY"}, "candidates": []})
        return JSONResponse(
            {
                "candidates": [
                    {
                        "content": {
                            "role": "model",
                            "parts": [{"inlineData": {"mimeType": "image/png", "data": _png()}}],
                        },
                        "finishReason": "STOP",
                    }
                ]
            }
        )

    return app
