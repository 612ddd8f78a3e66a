"""The style grades of the local renderer: one clearly distinct look per style, resolution-independent.

Tone work is done with 256-entry lookup tables (one pass over the pixels); spatial effects (glow, vignette,
sharpening) scale their radii with the image so standard and high renders look alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from PIL import Image, ImageChops, ImageEnhance, ImageFilter, ImageStat

from services.renders.rendering.contract import Style

Curve = Callable[[float], float]


def _lut(curve: Curve) -> list[int]:
    return [max(0, min(255, round(255 * curve(i / 255)))) for i in range(256)]


def apply_curves(image: Image.Image, red: Curve, green: Curve, blue: Curve) -> Image.Image:
    return image.point(_lut(red) + _lut(green) + _lut(blue))


def s_curve(strength: float) -> Curve:
    """Contrast around mid-grey: > 0 steepens the mid-tones, < 0 flattens them (monotonic for |strength| <= 1)."""
    return lambda x: x - strength * math.sin(2 * math.pi * x) / (2 * math.pi)


def levels(black_in: float = 0.0, white_in: float = 1.0, black_out: float = 0.0, white_out: float = 1.0) -> Curve:
    def curve(x: float) -> float:
        t = min(1.0, max(0.0, (x - black_in) / (white_in - black_in)))
        return black_out + (white_out - black_out) * t

    return curve


def gamma(value: float) -> Curve:
    """``value`` > 1 brightens the mid-tones (exposure without clipping the highlights)."""
    return lambda x: x ** (1 / value)


def chain(*curves: Curve) -> Curve:
    def curve(x: float) -> float:
        for step in curves:
            x = step(x)
        return x

    return curve


def gain(factor: float, base: Curve) -> Curve:
    return lambda x: base(x) * factor


def radial_mask(size: tuple[int, int], inner: float, outer: float) -> Image.Image:
    """``L`` mask: 0 inside ``inner`` (fraction of the half-diagonal), rising smoothly to 255 at ``outer``."""
    gradient = Image.radial_gradient("L")  # 0 at the centre, 255 at the corners

    def smooth(v: int) -> int:
        t = min(1.0, max(0.0, (v / 255 - inner) / (outer - inner)))
        return round(255 * t * t * (3 - 2 * t))

    return gradient.point(smooth).resize(size, Image.Resampling.BILINEAR)


def vignette(image: Image.Image, strength: float) -> Image.Image:
    mask = radial_mask(image.size, 0.45, 1.0).point(lambda v: round(255 - strength * v))
    return ImageChops.multiply(image, Image.merge("RGB", (mask, mask, mask)))


def glow(image: Image.Image, radius_fraction: float, opacity: float) -> Image.Image:
    """Let highlights bleed into their surroundings (lighten with a blurred copy); blurred at quarter size."""
    small = image.reduce(4)
    blurred = small.filter(ImageFilter.GaussianBlur(max(image.size) * radius_fraction / 4))
    blurred = blurred.resize(image.size, Image.Resampling.BILINEAR)
    return Image.blend(image, ImageChops.lighter(image, blurred), opacity)


def white_patch_gains(image: Image.Image) -> tuple[float, float, float]:
    """Per-channel gains that make the brightest 5% neutral (clamped, so a coloured scene is not re-coloured)."""
    small = image.reduce(8)
    luma = small.convert("L")
    histogram = luma.histogram()
    threshold, seen = 255, 0
    while threshold > 0 and seen < 0.05 * sum(histogram):
        seen += histogram[threshold]
        threshold -= 1
    mask = luma.point(lambda v: 255 if v > threshold else 0)
    means = ImageStat.Stat(small, mask).mean
    top = max(means)
    r, g, b = (max(0.9, min(1.1, top / max(m, 1.0))) for m in means)
    return r, g, b


def _scale(image: Image.Image) -> float:
    return max(image.size) / 1920


def photorealistic(image: Image.Image) -> Image.Image:
    """Gentle contrast, a touch of colour, crisp detail."""
    curve = s_curve(0.25)
    image = ImageEnhance.Color(apply_curves(image, curve, curve, curve)).enhance(1.06)
    return image.filter(ImageFilter.UnsharpMask(radius=1.4 * _scale(image), percent=70, threshold=2))


def dramatic(image: Image.Image) -> Image.Image:
    """Strong contrast, crushed shadows, cool tint, muted colour and a heavy vignette."""
    tone = chain(levels(black_in=0.12, white_in=0.96), s_curve(0.7))
    image = apply_curves(image, gain(0.92, tone), tone, chain(tone, levels(black_out=0.05, white_out=1.0)))
    image = ImageEnhance.Color(image).enhance(0.82)
    image = image.filter(ImageFilter.UnsharpMask(radius=10 * _scale(image), percent=25, threshold=0))
    return vignette(image, 0.45)


def soft(image: Image.Image) -> Image.Image:
    """Lifted shadows, low contrast, warm highlights and a diffuse glow."""
    tone = chain(s_curve(-0.25), levels(black_out=0.09, white_out=0.97))
    image = apply_curves(image, gain(1.0, chain(tone, gamma(1.08))), tone, gain(0.92, tone))
    image = ImageEnhance.Color(image).enhance(0.92)
    return glow(image, 0.012, 0.5)


def studio(image: Image.Image) -> Image.Image:
    """Bright and neutral: cast removed, exposure up, subject crisp, colour fading towards the edges."""
    r, g, b = white_patch_gains(image)
    tone = chain(gamma(1.3), levels(white_in=0.93), s_curve(0.15))
    image = apply_curves(image, gain(r, tone), gain(g, tone), gain(b, tone))
    centre = ImageEnhance.Color(image).enhance(0.85)
    edges = ImageEnhance.Color(image).enhance(0.45)
    image = Image.composite(edges, centre, radial_mask(image.size, 0.3, 0.95))
    return image.filter(ImageFilter.UnsharpMask(radius=1.0 * _scale(image), percent=50, threshold=2))


def natural(image: Image.Image) -> Image.Image:
    """Mild saturation and a warm white balance; contrast almost untouched."""
    tone = s_curve(0.1)
    image = apply_curves(image, gain(1.05, tone), gain(1.01, tone), gain(0.92, tone))
    return ImageEnhance.Color(image).enhance(1.15)


GRADES: dict[Style, Callable[[Image.Image], Image.Image]] = {
    "photorealistic": photorealistic,
    "dramatic": dramatic,
    "soft": soft,
    "studio": studio,
    "natural": natural,
}


def grade(image: Image.Image, style: Style) -> Image.Image:
    """Apply the style's grade (an unknown style is a programming error, not a user error)."""
    return GRADES[style](image)
