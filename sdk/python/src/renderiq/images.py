"""The image of a render submission: read from a path, bytes or a binary file, with its media type."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import BinaryIO

from renderiq.errors import ValidationError

ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
"""A file path (``str`` or ``pathlib.Path``), the raw bytes, or a file object opened in binary mode."""

MEDIA_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/webp")
EXTENSIONS = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/webp": ".webp"}


@dataclass(frozen=True)
class ImageUpload:
    filename: str
    content: bytes
    media_type: str


def sniff_media_type(content: bytes) -> str | None:
    """The media type its magic bytes say (PNG, JPEG, WebP), or None."""
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return None


def _read(image: ImageInput) -> tuple[bytes, str | None]:
    """The bytes and, when it has one, the file name of ``image``."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image), None
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        try:
            return path.read_bytes(), path.name
        except OSError as exc:
            raise ValidationError(
                f"Cannot read image {path}: {exc.strerror or exc}",
                error_code="INVALID_IMAGE",
                details={"field": "uploadedImageData", "reason": "unreadable file"},
            ) from exc
    content = image.read()
    if not isinstance(content, bytes):
        raise TypeError("open the image file in binary mode ('rb')")
    name = getattr(image, "name", None)
    return content, PurePath(name).name if isinstance(name, str) else None


def load_image(image: ImageInput, media_type: str | None = None, filename: str | None = None) -> ImageUpload:
    """Read ``image``; its type is ``media_type`` when given, else what its bytes or its file extension say."""
    content, name = _read(image)
    filename = filename or name
    if media_type is None:
        by_extension = EXTENSIONS.get(PurePath(filename).suffix.lower()) if filename else None
        media_type = sniff_media_type(content) or by_extension
    if media_type not in MEDIA_TYPES:
        raise ValidationError(
            f"Unsupported image type {media_type!r}: send PNG, JPEG or WebP"
            if media_type
            else "Cannot tell the image type: pass image_type ('image/png', 'image/jpeg' or 'image/webp')",
            error_code="INVALID_IMAGE",
            details={"field": "uploadedImageType", "reason": "unsupported type"},
        )
    return ImageUpload(filename or "image" + SUFFIXES[media_type], content, media_type)
