"""Synthetic, deterministic PNG inputs for the render benchmarks (Pillow only, no numpy).

``scene_png`` draws something shaped like a viewport capture: a sky-to-ground gradient, a few flat-shaded boxes, and
seeded speckle noise (a fraction ``density``/256 of the samples get up to ``amplitude`` added). The noise is what
makes PNG sizes realistic: a clean gradient compresses to almost nothing. ``png_near`` keeps the size fixed and
bisects the speckle density until the PNG lands closest to a byte target.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw


@dataclass(frozen=True)
class SyntheticPng:
    data: bytes
    width: int
    height: int
    density: int
    amplitude: int

    def describe(self) -> dict[str, int | str]:
        return {
            "bytes": len(self.data),
            "width": self.width,
            "height": self.height,
            "content": (
                f"gradient + 6 boxes + speckle noise (density {self.density}/256 of samples, amplitude "
                f"{self.amplitude}), RGB, Pillow compress_level 6"
            ),
        }


def scene_png(
    width: int, height: int, *, density: int = 32, amplitude: int = 48, seed: int = 7, compress_level: int = 6
) -> bytes:
    """A ``width`` x ``height`` RGB PNG: gradient + boxes + speckles (``density`` of 256 samples get noise)."""
    rng = random.Random(seed)
    sky = Image.linear_gradient("L").resize((width, height))
    base = Image.merge("RGB", (sky.point(lambda v: 90 + v // 3), sky.point(lambda v: 130 + v // 4), sky))
    draw = ImageDraw.Draw(base)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height // 3, height)
        x1 = min(width, x0 + width // 8 + rng.randrange(width // 4 + 1))
        y1 = min(height, y0 + height // 20 + rng.randrange(height // 2 + 1))
        draw.rectangle((x0, y0, x1, y1), fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    if density > 0 and amplitude > 0:
        # One random byte per sample: below ``density`` it is a speckle whose strength is the byte itself, scaled.
        table = [(v * amplitude) // max(1, density) if v < density else 0 for v in range(256)]
        bands = [Image.frombytes("L", (width, height), rng.randbytes(width * height)).point(table) for _ in range(3)]
        base = ImageChops.add(base, Image.merge("RGB", bands))
    buffer = io.BytesIO()
    base.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def png_near(
    target_bytes: int, *, width: int = 1280, height: int = 720, amplitude: int = 48, seed: int = 7
) -> SyntheticPng:
    """The ``width`` x ``height`` scene whose PNG size is closest to ``target_bytes`` (bisecting the density)."""

    def make(density: int) -> SyntheticPng:
        return SyntheticPng(
            scene_png(width, height, density=density, amplitude=amplitude, seed=seed), width, height, density, amplitude
        )

    lo, hi = 0, 256
    best = make(lo)
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = make(mid)
        if abs(len(candidate.data) - target_bytes) < abs(len(best.data) - target_bytes):
            best = candidate
        if len(candidate.data) < target_bytes:
            lo = mid + 1
        else:
            hi = mid - 1
    return best
