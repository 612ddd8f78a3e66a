"""Output sizes: the long side comes from the quality, the short side makes the ratio exact."""

from __future__ import annotations

from typing import get_args

from services.renders.rendering.contract import AspectRatio, Quality

LONG_SIDE: dict[Quality, int] = {"standard": 1920, "high": 3840, "ultra": 3840}
ASPECT_RATIOS: tuple[AspectRatio, ...] = get_args(AspectRatio)


def output_size(quality: Quality, aspect_ratio: AspectRatio) -> tuple[int, int]:
    """``(width, height)`` of a render: e.g. high 16:9 -> 3840x2160, standard 9:16 -> 1080x1920."""
    if quality not in LONG_SIDE:
        raise ValueError(f"unknown quality {quality!r}")
    if aspect_ratio not in ASPECT_RATIOS:
        raise ValueError(f"unknown aspect ratio {aspect_ratio!r}")
    a, b = (int(part) for part in aspect_ratio.split(":"))
    long_side = LONG_SIDE[quality]
    short_side, remainder = divmod(long_side * min(a, b), max(a, b))
    if remainder:  # every supported ratio divides the long sides exactly; a new one must too
        raise ValueError(f"{aspect_ratio} has no exact integer size at {long_side} px")
    return (long_side, short_side) if a >= b else (short_side, long_side)
