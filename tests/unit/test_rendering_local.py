"""The ``local`` renderer end to end through its process pool: sizes, fit, styles, ultra, progress, failures."""

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from itertools import combinations, pairwise
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageStat

from services.renders.rendering import ProgressCallback, Renderer, RendererRegistry, RenderFailure, RenderRequest
from services.renders.rendering.imaging import cover_fit, decode_for_size

ROOT = Path(__file__).resolve().parents[2]
STYLES = ("photorealistic", "dramatic", "soft", "studio", "natural")
RATIOS = ("16:9", "4:3", "1:1", "9:16", "3:2", "2:3")
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def scene(width: int, height: int) -> Image.Image:
    """Full tonal range (black to white gradient), saturated shapes, and fine detail to sharpen."""
    image = Image.linear_gradient("L").rotate(90).resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 8, height // 8, width // 3, height // 2), fill=(200, 40, 40))
    draw.ellipse((width // 2, height // 4, width * 3 // 4, height * 3 // 4), fill=(40, 170, 70))
    draw.rectangle((width // 3, height * 2 // 3, width // 2, height * 7 // 8), fill=(40, 60, 190))
    for x in range(0, width, 12):
        draw.line((x, height * 7 // 8, x + 6, height), fill=(235, 235, 235), width=2)
    return image


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def request(data: bytes, fmt: str = "PNG", **overrides: str | None) -> RenderRequest:
    fields: dict[str, str | None] = {"quality": "standard", "aspect_ratio": "16:9", "style": "photorealistic"}
    fields["prompt"] = None
    fields.update(overrides)
    return RenderRequest(image=data, image_type=MIME[fmt], model="local", **fields)  # type: ignore[arg-type]


async def no_progress(_: int, __: str) -> None:
    return None


def decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def luma(image: Image.Image) -> ImageStat.Stat:
    return ImageStat.Stat(image.convert("L"))


@pytest.fixture(scope="module")
async def local() -> AsyncIterator[Renderer]:
    registry = RendererRegistry(workers=2)
    try:
        yield registry.get("local")
    finally:
        await registry.aclose()


@pytest.fixture(scope="module")
def landscape_png() -> bytes:
    return encode(scene(1600, 900), "PNG")


@pytest.fixture(scope="module")
async def graded(local: Renderer, landscape_png: bytes) -> dict[str, Image.Image]:
    """One standard 16:9 render per style of the same input."""
    outputs = await asyncio.gather(*(local.render(request(landscape_png, style=s), no_progress) for s in STYLES))
    return {style: decode_png(png) for style, png in zip(STYLES, outputs, strict=True)}


@pytest.mark.parametrize(
    ("width", "height", "fmt", "ratios"),
    [
        (1600, 900, "PNG", RATIOS),
        (600, 1000, "JPEG", ("16:9", "2:3")),
        (800, 800, "WEBP", ("4:3", "9:16")),
        (5000, 2000, "JPEG", ("1:1", "3:2")),  # large JPEG: decoded at a reduced DCT scale
    ],
)
async def test_output_is_a_png_of_exactly_the_output_size(
    local: Renderer, width: int, height: int, fmt: str, ratios: tuple[str, ...]
) -> None:
    data = encode(scene(width, height), fmt)
    outputs = await asyncio.gather(
        *(local.render(request(data, fmt, aspect_ratio=r, style="natural"), no_progress) for r in ratios)
    )
    expected = {"16:9": (1920, 1080), "4:3": (1920, 1440), "1:1": (1920, 1920)}
    expected |= {"9:16": (1080, 1920), "3:2": (1920, 1280), "2:3": (1280, 1920)}
    for ratio, png in zip(ratios, outputs, strict=True):
        image = decode_png(png)
        assert (image.size, image.mode) == (expected[ratio], "RGB"), ratio


def test_cover_fit_crops_the_centre_without_stretching() -> None:
    """Three vertical bands red|green|blue; a portrait crop keeps only the green centre, undistorted."""
    bands = Image.new("RGB", (1600, 900), (255, 0, 0))
    bands.paste((0, 255, 0), (533, 0, 1067, 900))
    bands.paste((0, 0, 255), (1067, 0, 1600, 900))
    portrait = cover_fit(bands, (270, 480))  # 9:16: crop width 506 of the 534-px green band
    assert portrait.size == (270, 480)
    for x in (2, 135, 267):
        assert portrait.getpixel((x, 240)) == pytest.approx((0, 255, 0), abs=15), x
    square = cover_fit(bands, (300, 300))  # 1:1: crop 900 wide -> red and blue are mostly cut away
    assert square.getpixel((150, 150)) == (0, 255, 0)
    circle = Image.new("L", (1600, 900), 0)
    ImageDraw.Draw(circle).ellipse((575, 225, 1025, 675), fill=255)
    fitted = cover_fit(circle, (480, 480))  # same scale both ways: the circle stays round
    box = fitted.getbbox()
    assert box is not None
    assert abs((box[2] - box[0]) - (box[3] - box[1])) <= 2


def test_decode_flattens_transparency_onto_white_and_applies_exif_rotation() -> None:
    rgba = Image.new("RGBA", (64, 32), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 32, 32))
    image = decode_for_size(encode(rgba, "PNG"), "image/png", (64, 32))
    assert image.mode == "RGB"
    assert image.getpixel((48, 16)) == (255, 255, 255)
    assert image.getpixel((16, 16)) == (255, 0, 0)
    sixteen_bit = Image.linear_gradient("L").convert("I").point(lambda v: v * 257).convert("I;16")
    grey = decode_for_size(encode(sixteen_bit, "PNG"), "image/png", (256, 256))
    column = [grey.getpixel((0, y)) for y in (0, 128, 255)]
    assert [pixel[0] for pixel in column] == pytest.approx([0, 128, 255], abs=3)  # type: ignore[index]  # not clipped
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    scene(400, 300).save(buffer, format="JPEG", exif=exif)
    assert decode_for_size(buffer.getvalue(), "image/jpeg", (100, 100)).size == (300, 400)


def test_every_style_looks_different(graded: dict[str, Image.Image]) -> None:
    for a, b in combinations(STYLES, 2):
        diff = ImageStat.Stat(ImageChops.difference(graded[a], graded[b])).mean
        assert sum(diff) / 3 > 6, (a, b, diff)


def test_styles_have_their_character(graded: dict[str, Image.Image]) -> None:
    centre = {style: image.crop((480, 270, 1440, 810)) for style, image in graded.items()}  # outside the vignette
    contrast = {style: luma(image).stddev[0] for style, image in centre.items()}
    rgb = {style: ImageStat.Stat(image).mean for style, image in graded.items()}
    base = "photorealistic"

    # dramatic: the most contrast, crushed shadows, cooler; soft: the least contrast, lifted shadows
    assert contrast["dramatic"] > contrast[base] * 1.1
    assert contrast["soft"] < contrast[base] * 0.8
    darkest = {style: int(image.convert("L").getextrema()[0]) for style, image in graded.items()}  # type: ignore[arg-type]
    assert darkest["soft"] >= 20
    assert darkest["dramatic"] <= darkest[base] <= 5
    assert rgb["dramatic"][2] - rgb["dramatic"][0] > rgb[base][2] - rgb[base][0] + 5
    # studio is the brightest and the least saturated at the edges; natural and soft are warmer than the base
    assert luma(graded["studio"]).mean[0] > max(luma(graded[s]).mean[0] for s in STYLES if s != "studio")
    for warm in ("natural", "soft"):
        assert rgb[warm][0] - rgb[warm][2] > rgb[base][0] - rgb[base][2] + 5, warm
    red_block = (260, 160, 580, 500)  # the red rectangle, off-centre
    saturation = {s: ImageStat.Stat(graded[s].crop(red_block).convert("HSV")).mean[1] for s in (base, "studio")}
    assert saturation["studio"] < saturation[base] * 0.8

    # dramatic's vignette: the top-right corner darkens relative to the same gradient column at mid-height
    def corner_ratio(image: Image.Image) -> float:
        corner = luma(image.crop((1824, 0, 1920, 96))).mean[0]
        middle = luma(image.crop((1824, 492, 1920, 588))).mean[0]
        return corner / middle

    assert corner_ratio(graded["dramatic"]) < corner_ratio(graded[base]) * 0.85


async def test_high_and_ultra_stay_off_the_event_loop_and_ultra_adds_detail(
    local: Renderer, landscape_png: bytes
) -> None:
    """Two 3840x2160 renders; meanwhile a 10 ms ticker must keep running (the loop is never blocked for long)."""
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    progress: dict[str, list[tuple[int, str]]] = {"high": [], "ultra": []}

    def recorder(quality: str) -> ProgressCallback:
        async def record(percent: int, stage: str) -> None:
            progress[quality].append((percent, stage))

        return record

    ticking = asyncio.create_task(ticker())
    started = time.monotonic()
    high_png, ultra_png = await asyncio.gather(
        local.render(request(landscape_png, quality="high"), recorder("high")),
        local.render(request(landscape_png, quality="ultra"), recorder("ultra")),
    )
    elapsed = time.monotonic() - started
    stop.set()
    await ticking
    gaps = [b - a for a, b in pairwise(ticks)]
    assert len(ticks) > 10
    assert max(gaps) < 0.5, f"event loop blocked for {max(gaps):.2f}s during a {elapsed:.1f}s render"

    high, ultra = decode_png(high_png), decode_png(ultra_png)
    assert high.size == ultra.size == (3840, 2160)
    assert sum(ImageStat.Stat(ImageChops.difference(high, ultra)).mean) / 3 > 2
    edges = {name: luma(image.filter(ImageFilter.FIND_EDGES)).mean[0] for name, image in (("h", high), ("u", ultra))}
    assert edges["u"] > edges["h"] * 1.1, edges

    for _quality, events in progress.items():
        percents = [p for p, _ in events]
        assert percents == sorted(set(percents)), events  # strictly increasing
        assert percents[-1] == 100
        assert all(0 <= p <= 100 for p in percents)
        assert len(percents) >= 3
    assert [s for _, s in progress["ultra"]] == ["started", "graded", "refined", "encoded"]


async def test_progress_of_a_standard_render(local: Renderer, landscape_png: bytes) -> None:
    events: list[tuple[int, str]] = []

    async def record(percent: int, stage: str) -> None:
        events.append((percent, stage))

    await local.render(request(landscape_png, style="soft", prompt="ignored by the local renderer"), record)
    assert events == [(10, "started"), (70, "graded"), (100, "encoded")]


async def test_the_prompt_does_not_change_a_local_render(local: Renderer) -> None:
    data = encode(scene(480, 270), "PNG")
    a, b = await asyncio.gather(
        local.render(request(data, prompt=None), no_progress),
        local.render(request(data, prompt="make it a sunset"), no_progress),
    )
    assert a == b


@pytest.mark.parametrize(
    ("data", "fmt"), [(b"\x89PNG\r\n\x1a\n garbage", "PNG"), (encode(scene(64, 64), "PNG"), "JPEG")]
)
async def test_bad_input_is_a_final_failure(local: Renderer, data: bytes, fmt: str) -> None:
    with pytest.raises(RenderFailure) as caught:
        await local.render(request(data, fmt), no_progress)
    assert (caught.value.error_code, caught.value.retryable) == ("INVALID_IMAGE", False)


ORPHAN_SCRIPT = """
import asyncio, os, signal
from services.renders.rendering.pool import RenderPool

async def main():
    print(await RenderPool(1).run(os.getpid), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no shutdown, no cleanup: as the OOM killer would do it

if __name__ == "__main__":
    asyncio.run(main())
"""


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.startswith("State:") and "Z" in line for line in status)
    except FileNotFoundError:
        return True


def test_pool_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    output = tmp_path / "output.txt"
    with output.open("w") as sink:  # a file, not a pipe: a surviving worker would keep a pipe open
        done = subprocess.run([sys.executable, str(script)], stdout=sink, stderr=sink, timeout=60, env=env)
    assert done.returncode == -signal.SIGKILL, output.read_text()
    worker = int(output.read_text().split()[0])
    deadline = time.monotonic() + 10
    while not process_gone(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    gone = process_gone(worker)
    if not gone:
        os.kill(worker, signal.SIGKILL)  # leave no orphan behind even when the test fails
    assert gone, f"pool worker {worker} outlived its parent"
