"""Decoding untrusted image bytes safely, and the upload check built on it.

Every decode in this package goes through ``open_image``: only PNG/JPEG/WEBP decoders are tried, the pixel count
is checked from the header before any pixel is decoded, and Pillow's decompression-bomb warning is an error.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from services.renders.rendering.errors import InvalidImageError

IMAGE_TYPES: dict[str, str] = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG", "image/webp": "WEBP"}
DEFAULT_MAX_PIXELS = 50_000_000
MIN_SIDE = 16
# Pillow names camera JPEGs with an MPF extension "MPO"; they are JPEG files with extra frames.
_FORMAT_ALIASES = {"MPO": "JPEG"}
_DECODERS = ["PNG", "JPEG", "WEBP"]  # the only decoders ever tried (JPEG also yields MPO)
# Register every plugin now: ``Image.open(formats=...)`` raises KeyError ('MPO') on a non-image while the JPEG
# plugin's MPO sibling is not registered yet, which would surface as a 500 instead of INVALID_IMAGE.
Image.init()
ORIENTATION = 0x0112  # EXIF tag
SWAPPING_ORIENTATIONS = {5, 6, 7, 8}  # orientations that rotate by 90 degrees


@dataclass(frozen=True)
class ValidatedImage:
    """What an upload turned out to be; ``width``/``height`` are as displayed (EXIF orientation applied)."""

    data: bytes
    format: str
    width: int
    height: int

    def __repr__(self) -> str:
        return f"ValidatedImage(data=<{len(self.data)} bytes>, format={self.format!r}, {self.width}x{self.height})"


def expected_format(declared_type: str) -> str:
    """Pillow format name of a declared content type; an unsupported type is an invalid image."""
    fmt = IMAGE_TYPES.get(declared_type.strip().lower())
    if fmt is None:
        raise InvalidImageError("unsupported type", f"Unsupported image type {declared_type[:64]!r}")
    return fmt


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, expected: str | None = None) -> Image.Image:
    """Open (header only) and check limits; the caller decodes with ``load_image``. Raises ``InvalidImageError``."""
    if not data:
        raise InvalidImageError("empty", "The image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_DECODERS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InvalidImageError("too many pixels", "The image has too many pixels") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageError("undecodable", "The file is not a PNG, JPEG or WEBP image") from exc
    fmt = _FORMAT_ALIASES.get(image.format or "", image.format)
    if expected is not None and fmt != expected:
        raise InvalidImageError("type mismatch", f"The file is {fmt}, not the declared {expected}")
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidImageError("too many pixels", f"The image has more than {max_pixels} pixels")
    if min(width, height) < MIN_SIDE:
        raise InvalidImageError("too small", f"The image must be at least {MIN_SIDE} px on each side")
    return image


def load_image(image: Image.Image) -> Image.Image:
    """Decode the first frame's pixels; truncated or corrupt data is an ``InvalidImageError``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InvalidImageError("too many pixels", "The image has too many pixels") from exc
    except (OSError, ValueError, SyntaxError, EOFError, Image.UnidentifiedImageError) as exc:
        raise InvalidImageError("corrupt or truncated", "The image data is corrupt or truncated") from exc
    return image


def validate_upload(data: bytes, declared_type: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ValidatedImage:
    """Check an upload fully (format, limits, every byte of the first frame decodes) before it is accepted.

    CPU-bound (a full decode): call it off the event loop, e.g. ``await asyncio.to_thread(validate_upload, ...)``.
    Multi-frame images are accepted; renders use the first frame.
    """
    fmt = expected_format(declared_type)
    image = open_image(data, max_pixels=max_pixels, expected=fmt)
    width, height = image.size
    if fmt == "JPEG":
        # DCT scaling still reads the whole entropy-coded stream (so truncation is caught) at a fraction of the cost.
        image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
    load_image(image)
    if image.getexif().get(ORIENTATION) in SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ValidatedImage(data=data, format=fmt, width=width, height=height)
