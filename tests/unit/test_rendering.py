"""Rendering package without renders: output sizes, upload validation, the registry, errors that cross processes."""

import io
import pickle
import struct
import warnings
import zlib

import pytest
from PIL import Image, ImageDraw

from services.renders.rendering import (
    IMAGE_TYPES,
    InvalidImageError,
    ModelUnavailableError,
    RendererRegistry,
    RenderFailure,
    output_size,
    validate_upload,
)
from shared.errors import DomainError

EXPECTED_SIZES = {
    ("standard", "16:9"): (1920, 1080),
    ("standard", "4:3"): (1920, 1440),
    ("standard", "1:1"): (1920, 1920),
    ("standard", "9:16"): (1080, 1920),
    ("standard", "3:2"): (1920, 1280),
    ("standard", "2:3"): (1280, 1920),
    ("high", "16:9"): (3840, 2160),
    ("high", "4:3"): (3840, 2880),
    ("high", "1:1"): (3840, 3840),
    ("high", "9:16"): (2160, 3840),
    ("high", "3:2"): (3840, 2560),
    ("high", "2:3"): (2560, 3840),
    ("ultra", "16:9"): (3840, 2160),
    ("ultra", "4:3"): (3840, 2880),
    ("ultra", "1:1"): (3840, 3840),
    ("ultra", "9:16"): (2160, 3840),
    ("ultra", "3:2"): (3840, 2560),
    ("ultra", "2:3"): (2560, 3840),
}


def scene(width: int, height: int) -> Image.Image:
    image = Image.linear_gradient("L").rotate(90).resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 8, height // 8, width // 3, height // 2), fill=(200, 40, 40))
    draw.ellipse((width // 2, height // 4, width * 3 // 4, height * 3 // 4), fill=(40, 170, 70))
    return image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A real 1-bit PNG of ``width`` x ``height`` zeros: a few kB on disk, huge once decoded."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def refusal(data: bytes, declared: str, **kwargs: int) -> str:
    with pytest.raises(InvalidImageError) as caught:
        validate_upload(data, declared, **kwargs)
    assert caught.value.status_code == 400
    assert caught.value.error_code == "INVALID_IMAGE"
    return str(caught.value.details["reason"])


# output sizes -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("quality", "ratio"), sorted(EXPECTED_SIZES))
def test_output_size_every_quality_and_ratio(quality: str, ratio: str) -> None:
    width, height = output_size(quality, ratio)  # type: ignore[arg-type]
    assert (width, height) == EXPECTED_SIZES[(quality, ratio)]
    a, b = (int(p) for p in ratio.split(":"))
    assert width * b == height * a  # exactly the ratio
    assert max(width, height) == (1920 if quality == "standard" else 3840)


def test_output_size_refuses_unknown_values() -> None:
    with pytest.raises(ValueError, match="quality"):
        output_size("max", "16:9")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aspect"):
        output_size("high", "21:9")  # type: ignore[arg-type]


# upload validation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "declared"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("JPEG", "image/jpg"), ("WEBP", "image/webp"), ("PNG", "IMAGE/PNG")],
)
def test_accepts_each_supported_type(fmt: str, declared: str) -> None:
    data = encode(scene(320, 200), fmt)
    validated = validate_upload(data, declared)
    assert (validated.format, validated.width, validated.height) == (fmt, 320, 200)
    assert validated.data == data
    assert IMAGE_TYPES[declared.lower()] == fmt


@pytest.mark.parametrize(
    ("fmt", "declared"), [("PNG", "image/jpeg"), ("JPEG", "image/png"), ("WEBP", "image/jpg"), ("PNG", "image/webp")]
)
def test_refuses_a_type_mismatch(fmt: str, declared: str) -> None:
    assert refusal(encode(scene(64, 64), fmt), declared) == "type mismatch"


def test_refuses_unsupported_declared_type() -> None:
    assert refusal(encode(scene(64, 64), "GIF"), "image/gif") == "unsupported type"


def test_refuses_a_gif_declared_as_png() -> None:
    """Only the PNG/JPEG/WEBP decoders are ever tried, whatever the bytes are."""
    assert refusal(encode(scene(64, 64), "GIF"), "image/png") == "undecodable"


@pytest.mark.parametrize("data", [b"", b"not an image at all" * 50, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64])
def test_refuses_empty_and_garbage(data: bytes) -> None:
    assert refusal(data, "image/png") in {"empty", "undecodable"}


@pytest.mark.parametrize(("fmt", "declared"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_refuses_truncated_files(fmt: str, declared: str) -> None:
    noisy = Image.blend(scene(400, 300), Image.effect_noise((400, 300), 60).convert("RGB"), 0.4)
    data = encode(noisy, fmt)
    validate_upload(data, declared)  # the whole file is fine
    assert refusal(data[: len(data) * 2 // 3], declared) == "corrupt or truncated"


def test_refuses_a_decompression_bomb_below_pillows_own_limit() -> None:
    """2000x2000 is nothing to Pillow; our ``max_pixels`` is what refuses it, before any pixel is decoded."""
    assert refusal(bomb_png(2000, 2000), "image/png", max_pixels=1_000_000) == "too many pixels"
    assert validate_upload(bomb_png(2000, 2000), "image/png", max_pixels=4_000_000).width == 2000


def test_refuses_a_huge_declared_size_with_a_custom_limit() -> None:
    data = bomb_png(20_000, 20_000)  # 400 MP in a few tens of kB
    assert len(data) < 200_000
    assert refusal(data, "image/png", max_pixels=10_000_000) == "too many pixels"


@pytest.mark.parametrize("side", [8_000, 10_000])
def test_default_limit_refuses_more_than_50_megapixels(side: int) -> None:
    """8000² (64 MP) is below Pillow's warning threshold, 10000² (100 MP) above it: both refused, nothing leaks."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert refusal(bomb_png(side, side), "image/png") == "too many pixels"
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]


def test_refuses_too_small_images() -> None:
    assert refusal(encode(scene(15, 200), "PNG"), "image/png") == "too small"
    assert refusal(encode(scene(200, 15), "JPEG"), "image/jpeg") == "too small"
    assert validate_upload(encode(scene(16, 16), "PNG"), "image/png").width == 16


def test_accepts_multi_frame_images() -> None:
    frames = [scene(64, 48), scene(64, 48).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    assert validate_upload(data, "image/webp").format == "WEBP"
    apng = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)
    assert validate_upload(apng, "image/png").width == 64


def test_reports_the_upright_size_of_a_rotated_jpeg() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    validated = validate_upload(encode(scene(400, 300), "JPEG", exif=exif), "image/jpeg")
    assert (validated.width, validated.height) == (300, 400)


# errors ------------------------------------------------------------------------------------------------------------


def test_errors_survive_a_pickle_round_trip() -> None:
    """Pool workers raise them in another process; they must arrive intact."""
    invalid = pickle.loads(pickle.dumps(InvalidImageError("too small")))
    assert (invalid.details, invalid.error_code, invalid.status_code) == ({"reason": "too small"}, "INVALID_IMAGE", 400)
    failure = pickle.loads(pickle.dumps(RenderFailure("boom", error_code="X", retryable=True)))
    assert (failure.message, failure.error_code, failure.retryable) == ("boom", "X", True)
    missing = pickle.loads(pickle.dumps(ModelUnavailableError("m", ["local"])))
    assert missing.details == {"model": "m", "available": ["local"]}


# registry ----------------------------------------------------------------------------------------------------------


async def test_registry_without_gemini_key_offers_only_local() -> None:
    registry = RendererRegistry()
    try:
        assert registry.available() == ["local"]
        assert registry.resolve(None) == "local"
        assert registry.resolve("local") == "local"
        assert registry.get("local").name == "local"
        for model in ("gemini-2.5-flash-image", "dall-e-3", "LOCAL", ""):
            with pytest.raises(ModelUnavailableError) as caught:
                registry.resolve(model)
            assert isinstance(caught.value, DomainError)
            assert (caught.value.status_code, caught.value.error_code) == (400, "MODEL_UNAVAILABLE")
            assert caught.value.details == {"model": model, "available": ["local"]}
        with pytest.raises(ModelUnavailableError):
            registry.get("gemini-2.5-flash-image")
    finally:
        await registry.aclose()


async def test_registry_with_gemini_key_offers_its_models() -> None:
    key = "AIza-unit-test-key-0123456789"
    registry = RendererRegistry(gemini_api_key=key, gemini_models=("gemini-2.5-flash-image", "gemini-3-pro-image"))
    try:
        assert registry.available() == ["local", "gemini-2.5-flash-image", "gemini-3-pro-image"]
        assert registry.resolve(None) == "local"
        assert registry.resolve("gemini-3-pro-image") == "gemini-3-pro-image"
        assert registry.get("gemini-2.5-flash-image").name == "gemini-2.5-flash-image"
        with pytest.raises(ModelUnavailableError):
            registry.resolve("gemini-1.0-pro")
        assert key not in repr(registry) + repr(registry.get("gemini-2.5-flash-image"))
    finally:
        await registry.aclose()


async def test_registry_default_model() -> None:
    registry = RendererRegistry(default_model="gemini-2.5-flash-image", gemini_api_key="k")
    try:
        assert registry.resolve(None) == "gemini-2.5-flash-image"
    finally:
        await registry.aclose()
    with pytest.raises(ModelUnavailableError):  # a default that cannot render is a deployment error, found at start
        RendererRegistry(default_model="gemini-2.5-flash-image")
