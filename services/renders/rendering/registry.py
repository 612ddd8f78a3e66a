"""Which renderers this deployment offers, and the one place a requested model is resolved."""

from __future__ import annotations

from services.renders.rendering.contract import Renderer
from services.renders.rendering.errors import ModelUnavailableError
from services.renders.rendering.gemini import GeminiRenderer
from services.renders.rendering.local import LocalRenderer
from services.renders.rendering.pool import RenderPool


class RendererRegistry:
    """``local`` always; Gemini models only when an API key is configured. One process pool serves them all."""

    def __init__(
        self,
        *,
        default_model: str = "local",
        gemini_api_key: str | None = None,
        gemini_base_url: str = "https://generativelanguage.googleapis.com",
        gemini_models: tuple[str, ...] = ("gemini-2.5-flash-image",),
        gemini_timeout_seconds: float = 120.0,
        workers: int = 1,
        png_compress_level: int = 3,
    ) -> None:
        if not 0 <= png_compress_level <= 9:
            raise ValueError("png_compress_level must be 0-9")
        self._pool = RenderPool(workers)
        self._local = LocalRenderer(self._pool, png_compress_level=png_compress_level)
        self._gemini: dict[str, GeminiRenderer] = {}
        if gemini_api_key:
            for model in gemini_models:
                self._gemini[model] = GeminiRenderer(
                    model,
                    api_key=gemini_api_key,
                    pool=self._pool,
                    base_url=gemini_base_url,
                    timeout_seconds=gemini_timeout_seconds,
                    png_compress_level=png_compress_level,
                )
        self._renderers: dict[str, Renderer] = {self._local.name: self._local, **self._gemini}
        if default_model not in self._renderers:
            # A deployment whose default cannot render must not start (and must not fall back to another model).
            raise ModelUnavailableError(default_model, self.available())
        self.default_model = default_model

    def __repr__(self) -> str:
        return f"RendererRegistry(default_model={self.default_model!r}, available={self.available()!r})"

    def available(self) -> list[str]:
        return list(self._renderers)

    def resolve(self, model: str | None) -> str:
        """The model a render will use: ``None`` means the default; anything not offered here is refused."""
        name = self.default_model if model is None else model
        if name not in self._renderers:
            raise ModelUnavailableError(name, self.available())
        return name

    def get(self, model: str) -> Renderer:
        return self._renderers[self.resolve(model)]

    async def aclose(self) -> None:
        """Close the HTTP clients and the process pool (waits for running pool jobs, drops queued ones)."""
        for renderer in self._gemini.values():
            await renderer.aclose()
        await self._pool.aclose()
