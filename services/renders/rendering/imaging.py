"""Pixel work shared by the adapters: safe decode, cover-fit, ultra refinement, PNG encode.

Functions here are synchronous and CPU-bound; they run in the render process pool (see ``pool.py``), so they take
and return only picklable values (bytes, tuples, PIL images).
"""

from __future__ import annotations

import io
import math

from PIL import Image, ImageFilter, ImageOps

from services.renders.rendering.validation import (
    ORIENTATION,
    SWAPPING_ORIENTATIONS,
    expected_format,
    load_image,
    open_image,
)

WHITE = (255, 255, 255)


def decode_for_size(data: bytes, image_type: str | None, size: tuple[int, int]) -> Image.Image:
    """Decode the first frame upright, as RGB; large JPEGs are decoded at a reduced DCT scale when ``size`` allows."""
    image = open_image(data, expected=expected_format(image_type) if image_type else None)
    if image.format in ("JPEG", "MPO"):
        width, height = image.size
        if image.getexif().get(ORIENTATION) in SWAPPING_ORIENTATIONS:
            width, height = height, width
        factor = max(size[0] / width, size[1] / height)  # the cover-fit scale of the upright image
        if factor < 0.5:  # keep >= 2x the needed pixels so LANCZOS still does the final reduction
            request = (math.ceil(image.width * factor * 2), math.ceil(image.height * factor * 2))
            image.draft(image.mode, request)
    load_image(image)
    upright = ImageOps.exif_transpose(image)
    return to_rgb(upright)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; transparency is flattened onto white (how modelling tools show an empty background)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        image = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*WHITE, 255)), rgba)
    rgb = image.convert("RGB") if image.mode != "RGB" else image
    rgb.info = {}  # drop ICC/EXIF/text: nothing of the upload's metadata travels into the output
    return rgb


def cover_box(source: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centred crop of ``source`` that has exactly the aspect ratio of ``size`` (sub-pixel box)."""
    src_w, src_h = source
    target = size[0] / size[1]
    if src_w / src_h > target:
        crop_w = src_h * target
        return ((src_w - crop_w) / 2, 0.0, (src_w + crop_w) / 2, float(src_h))
    crop_h = src_w / target
    return (0.0, (src_h - crop_h) / 2, float(src_w), (src_h + crop_h) / 2)


def cover_fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop to the ratio of ``size`` and resample (LANCZOS) to exactly ``size``."""
    box = cover_box(image.size, size)
    return image.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


def refine(image: Image.Image) -> Image.Image:
    """Ultra's extra passes at full resolution: local-contrast (clarity) then fine detail sharpening."""
    scale = max(image.size) / 1920
    clarity = image.filter(ImageFilter.UnsharpMask(radius=24 * scale, percent=35, threshold=0))
    return clarity.filter(ImageFilter.UnsharpMask(radius=1.2 * scale, percent=110, threshold=2))


def encode_png(image: Image.Image, compress_level: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def provider_output_stage(data: bytes, size: tuple[int, int], ultra: bool, compress_level: int) -> bytes:
    """Pool stage for a provider's image: decode (any supported format), fit to ``size``, refine if ultra, PNG.

    One call, so only bytes cross the process boundary.
    """
    image = cover_fit(decode_for_size(data, None, size), size)
    return encode_png(refine(image) if ultra else image, compress_level)


def provider_input_stage(data: bytes, image_type: str, aspect_ratio: str, max_side: int) -> bytes:
    """The upload as a provider should see it: upright, cropped to the requested ratio, at most ``max_side``, JPEG.

    Cropping first means the provider frames the same view we deliver (the final fit then crops nothing), and the
    size cap keeps the request far below provider upload limits whatever the upload was.
    """
    a, b = (int(part) for part in aspect_ratio.split(":"))
    bound = (max_side, max(1, max_side * b // a)) if a >= b else (max(1, max_side * a // b), max_side)
    image = decode_for_size(data, image_type, bound)
    box = cover_box(image.size, (a, b))
    crop_w, crop_h = box[2] - box[0], box[3] - box[1]
    scale = min(1.0, max_side / max(crop_w, crop_h))
    size = (max(1, round(crop_w * scale)), max(1, round(crop_h * scale)))
    image = image.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()
