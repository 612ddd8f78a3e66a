"""The renderer port: what a render asks for, how progress is reported, and what every adapter provides."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

Quality = Literal["standard", "high", "ultra"]
AspectRatio = Literal["16:9", "4:3", "1:1", "9:16", "3:2", "2:3"]
Style = Literal["photorealistic", "dramatic", "soft", "studio", "natural"]

ProgressCallback = Callable[[int, str], Awaitable[None]]
"""``(percent 0-100, stage)``: awaited on the event loop after each stage; percents only increase, the last is 100."""


@dataclass(frozen=True)
class RenderRequest:
    image: bytes
    image_type: str
    prompt: str | None
    quality: Quality
    aspect_ratio: AspectRatio
    style: Style
    model: str

    def __repr__(self) -> str:
        # Never put the image bytes (or the user's prompt) into a log line or a traceback.
        return (
            f"RenderRequest(image=<{len(self.image)} bytes>, image_type={self.image_type!r}, "
            f"quality={self.quality!r}, aspect_ratio={self.aspect_ratio!r}, style={self.style!r}, "
            f"model={self.model!r})"
        )


class Renderer(Protocol):
    """An adapter: turns a request into PNG bytes of exactly ``output_size(quality, aspect_ratio)``.

    Raises ``RenderFailure`` for a render that fails (``retryable`` tells the worker whether to try again).
    """

    name: str

    async def render(self, request: RenderRequest, progress: ProgressCallback) -> bytes: ...
