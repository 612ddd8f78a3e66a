"""Adapter for Google's Gemini image models (``generateContent`` over REST).

The upload is sent cropped to the requested ratio together with a prompt built from the user's text and the style;
the returned image then goes through the same fit/resample/PNG step as local renders, so the output always has
exactly ``output_size``. Failures map onto ``RenderFailure`` with ``retryable`` set for the worker's retry policy.
The API key travels only in the ``x-goog-api-key`` header: never in URLs, messages or logs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from typing import Any

import httpx
import structlog

from services.renders.rendering.contract import AspectRatio, ProgressCallback, RenderRequest, Style
from services.renders.rendering.errors import RenderFailure
from services.renders.rendering.imaging import provider_input_stage, provider_output_stage
from services.renders.rendering.pool import RenderPool
from services.renders.rendering.sizes import output_size

log = structlog.stdlib.get_logger(__name__)

MAX_INPUT_SIDE = 2048
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
RETRYABLE_STATUSES = {408, 429, 500, 502, 503, 504}
# Candidate finish reasons that mean the provider refused the content (as opposed to simply returning no image).
BLOCKING_FINISH_REASONS = {
    "SAFETY",
    "PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
}
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

STYLE_PROMPTS: dict[Style, str] = {
    "photorealistic": "photorealistic, physically plausible materials and lighting, natural soft shadows",
    "dramatic": "dramatic cinematic lighting, strong contrast, deep shadows, moody cool atmosphere",
    "soft": "soft diffuse lighting, low contrast, lifted shadows, a warm airy glow",
    "studio": "bright, even studio lighting, neutral white balance, clean and crisp",
    "natural": "natural daylight, true-to-life colours, a warm balanced white balance",
}


def build_prompt(user_prompt: str | None, style: Style) -> str:
    lines = [
        "Turn this view into a finished, high-quality render.",
        f"Look: {STYLE_PROMPTS[style]}.",
    ]
    if user_prompt and user_prompt.strip():
        lines.append(f"Instructions from the user: {user_prompt.strip()}")
    lines.append(
        "Keep the exact composition and geometry of the input view: same camera position, perspective, framing "
        "and objects; do not add, remove, move or reshape anything."
    )
    return "\n".join(lines)


def build_body(prompt: str, image: bytes, mime_type: str, aspect_ratio: AspectRatio) -> dict[str, Any]:
    return {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": prompt},
                    {"inline_data": {"mime_type": mime_type, "data": base64.b64encode(image).decode("ascii")}},
                ],
            }
        ],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": aspect_ratio}},
    }


def extract_image(payload: Any) -> bytes:
    """The (last, non-"thought") image of the first candidate; a refusal or an image-less answer is final."""
    if not isinstance(payload, dict):
        raise _bad_response("not a JSON object")
    feedback = payload.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        raise RenderFailure(
            f"The image provider blocked the request ({feedback['blockReason']})",
            error_code="CONTENT_BLOCKED",
            retryable=False,
        )
    candidates = payload.get("candidates")
    candidate = candidates[0] if isinstance(candidates, list) and candidates else None
    if not isinstance(candidate, dict):
        raise RenderFailure("The image provider returned no image", error_code="NO_IMAGE_RETURNED", retryable=False)
    finish = candidate.get("finishReason")
    if finish in BLOCKING_FINISH_REASONS:
        raise RenderFailure(
            f"The image provider blocked the result ({finish})", error_code="CONTENT_BLOCKED", retryable=False
        )
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    images: list[str] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        inline = part.get("inlineData") or part.get("inline_data")
        if isinstance(inline, dict) and isinstance(inline.get("data"), str) and inline["data"]:
            images.append(inline["data"])
    if not images:
        detail = f" ({finish})" if isinstance(finish, str) else ""
        raise RenderFailure(
            f"The image provider returned no image{detail}", error_code="NO_IMAGE_RETURNED", retryable=False
        )
    try:
        return base64.b64decode(images[-1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad_response("image data is not base64") from exc


def _bad_response(why: str) -> RenderFailure:
    return RenderFailure(
        f"The image provider sent an unusable answer: {why}", error_code="PROVIDER_BAD_RESPONSE", retryable=True
    )


def _unavailable(why: str) -> RenderFailure:
    return RenderFailure(f"The image provider is unavailable: {why}", error_code="PROVIDER_UNAVAILABLE", retryable=True)


class GeminiRenderer:
    """One Gemini image model; ``name`` is the model id, as clients send it in ``model``."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        pool: RenderPool,
        base_url: str = "https://generativelanguage.googleapis.com",
        timeout_seconds: float = 120.0,
        png_compress_level: int = 3,
    ) -> None:
        if not _MODEL_NAME.match(model):
            raise ValueError(f"invalid Gemini model name {model!r}")
        if not api_key:
            raise ValueError("a Gemini API key is required")
        self.name = model
        self._api_key = api_key
        self._pool = pool
        self._url = f"{base_url.rstrip('/')}/v1beta/models/{model}:generateContent"
        self._timeout = timeout_seconds
        self._compress_level = png_compress_level
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"GeminiRenderer(model={self.name!r}, url={self._url!r})"

    async def render(self, request: RenderRequest, progress: ProgressCallback) -> bytes:
        """PNG of exactly ``output_size``; progress: 10 prepared, 80 generated, 100 encoded."""
        size = output_size(request.quality, request.aspect_ratio)
        upload = await self._pool.run(
            provider_input_stage, request.image, request.image_type, request.aspect_ratio, MAX_INPUT_SIDE
        )
        await progress(10, "prepared")
        body = build_body(build_prompt(request.prompt, request.style), upload, "image/jpeg", request.aspect_ratio)
        generated = extract_image(await self._generate(body))
        await progress(80, "generated")
        try:
            png = await self._pool.run(
                provider_output_stage, generated, size, request.quality == "ultra", self._compress_level
            )
        except RenderFailure as exc:
            if exc.error_code != "INVALID_IMAGE":
                raise
            raise _bad_response("the returned image cannot be decoded") from exc
        await progress(100, "encoded")
        return png

    async def _generate(self, body: dict[str, Any]) -> Any:
        """POST the request; the whole exchange (not just each read) is bounded by the timeout."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                status, raw = await self._post(body)
        except (TimeoutError, httpx.TimeoutException) as exc:
            log.warning("gemini_timeout", model=self.name, seconds=self._timeout)
            raise _unavailable("timed out") from exc
        except httpx.TransportError as exc:
            log.warning("gemini_unreachable", model=self.name, error_type=type(exc).__name__)
            raise _unavailable("connection failed") from exc
        elapsed_ms = round((time.monotonic() - started) * 1000)
        log.info("gemini_response", model=self.name, status=status, duration_ms=elapsed_ms, bytes=len(raw))
        if status != 200:
            raise self._status_failure(status, raw)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise _bad_response("invalid JSON") from exc

    async def _post(self, body: dict[str, Any]) -> tuple[int, bytes]:
        headers = {"x-goog-api-key": self._api_key, "content-type": "application/json"}
        async with self._http().stream("POST", self._url, content=json.dumps(body), headers=headers) as response:
            chunks: list[bytes] = []
            received = 0
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > MAX_RESPONSE_BYTES:
                    raise _bad_response("response too large")
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)

    def _status_failure(self, status: int, raw: bytes) -> RenderFailure:
        provider_status, provider_message = _provider_error(raw)
        log.warning(
            "gemini_error",
            model=self.name,
            status=status,
            provider_status=provider_status,
            provider_message=provider_message.replace(self._api_key, "[redacted]")[:300],
        )
        label = f"HTTP {status}" + (f" {provider_status}" if provider_status else "")
        if status in RETRYABLE_STATUSES or status >= 500:
            return _unavailable(label)
        return RenderFailure(
            f"The image provider rejected the request ({label})", error_code="PROVIDER_REJECTED", retryable=False
        )

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout, connect=min(10.0, self._timeout)), follow_redirects=False
            )
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _provider_error(raw: bytes) -> tuple[str, str]:
    """``error.status`` and ``error.message`` of a Google API error body, when there is one."""
    try:
        error = json.loads(raw).get("error", {})
        return str(error.get("status", "")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        return "", ""
