"""The ``local`` adapter: a real Pillow pipeline (decode, fit, grade, refine, encode) in the render process pool.

The prompt is ignored: a deterministic grade cannot follow free text, and pretending to would mislead.

The work is split into pool calls so progress is reported between them and a cancelled render stops at the next
boundary; each boundary costs a copy of the raw image between processes (~0.1 s at 3840x2160), so there are two
calls (three for ultra) rather than one per step.
"""

from __future__ import annotations

from PIL import Image

from services.renders.rendering.contract import ProgressCallback, RenderRequest, Style
from services.renders.rendering.imaging import cover_fit, decode_for_size, encode_png, refine
from services.renders.rendering.pool import RenderPool
from services.renders.rendering.sizes import output_size
from services.renders.rendering.styles import grade


def develop_stage(data: bytes, image_type: str, size: tuple[int, int], style: Style) -> Image.Image:
    """Pool stage: decode the upload, cover-fit it to ``size`` (LANCZOS) and apply the style's grade."""
    return grade(cover_fit(decode_for_size(data, image_type, size), size), style)


class LocalRenderer:
    name = "local"

    def __init__(self, pool: RenderPool, *, png_compress_level: int = 3) -> None:
        self._pool = pool
        self._compress_level = png_compress_level

    async def render(self, request: RenderRequest, progress: ProgressCallback) -> bytes:
        """PNG of exactly ``output_size``; progress: 10 started, 70 graded, (ultra) 90 refined, 100 encoded."""
        size = output_size(request.quality, request.aspect_ratio)
        await progress(10, "started")
        image = await self._pool.run(develop_stage, request.image, request.image_type, size, request.style)
        await progress(70, "graded")
        if request.quality == "ultra":
            image = await self._pool.run(refine, image)
            await progress(90, "refined")
        png = await self._pool.run(encode_png, image, self._compress_level)
        await progress(100, "encoded")
        return png
