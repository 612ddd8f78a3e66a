"""Rendering: the renderer port (``Renderer``) and its adapters (``local`` Pillow pipeline, Gemini image models).

The renders API validates uploads with ``validate_upload`` and resolves ``model`` with ``RendererRegistry``; the
render worker calls ``registry.get(model).render(request, progress)`` and maps ``RenderFailure`` to a failed (or
retried) render.
"""

from services.renders.rendering.contract import (
    AspectRatio,
    ProgressCallback,
    Quality,
    Renderer,
    RenderRequest,
    Style,
)
from services.renders.rendering.errors import InvalidImageError, ModelUnavailableError, RenderFailure
from services.renders.rendering.registry import RendererRegistry
from services.renders.rendering.sizes import output_size
from services.renders.rendering.validation import IMAGE_TYPES, ValidatedImage, validate_upload

__all__ = [
    "IMAGE_TYPES",
    "AspectRatio",
    "InvalidImageError",
    "ModelUnavailableError",
    "ProgressCallback",
    "Quality",
    "RenderFailure",
    "RenderRequest",
    "Renderer",
    "RendererRegistry",
    "Style",
    "ValidatedImage",
    "output_size",
    "validate_upload",
]
