"""The Gemini adapter against a fake Gemini server (real HTTP, the provider's request/response shapes).

The fake checks what the real API would reject (path, key header, body shape, the input image) and answers with
an image it draws at the provider's native size for the requested ratio, or with the error a scenario asks for.
"""

import asyncio
import base64
import binascii
import io
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image, ImageDraw

from services.renders.rendering import Renderer, RendererRegistry, RenderFailure, RenderRequest
from shared.engines import free_port
from shared.testing.servers import serve_in_thread

API_KEY = "AIzaSyFAKE-test-key-do-not-log-0123456789"
MODEL = "gemini-2.5-flash-image"
NATIVE_SIZES = {"16:9": (1344, 768), "9:16": (768, 1344), "1:1": (1024, 1024), "4:3": (1184, 864)}
NATIVE_SIZES |= {"3:2": (1248, 832), "2:3": (832, 1248)}


@dataclass
class FakeGemini:
    """What the next request gets (``scenario``) and what the server saw."""

    scenario: str = "image"
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def draw_render(size: tuple[int, int]) -> bytes:
    image = Image.new("RGB", size, (90, 120, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle((size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4), fill=(230, 200, 120))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def check_body(body: Any) -> tuple[list[str], str, bytes]:
    """The request's problems (empty when the real API would accept it), its prompt and its image."""
    problems: list[str] = []
    try:
        (content,) = body["contents"]
        text_part, image_part = content["parts"]
        prompt = text_part["text"]
        inline = image_part.get("inline_data") or image_part["inlineData"]
        mime = inline.get("mime_type") or inline["mimeType"]
        image = base64.b64decode(inline["data"], validate=True)
        config = body["generationConfig"]
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        return [f"malformed body: {exc!r}"], "", b""
    if content.get("role") != "user":
        problems.append("role")
    if not isinstance(prompt, str) or "composition" not in prompt:
        problems.append("prompt")
    if mime not in {"image/png", "image/jpeg", "image/webp"}:
        problems.append(f"mime {mime}")
    if config.get("responseModalities") != ["IMAGE"]:
        problems.append("responseModalities")
    if config.get("imageConfig", {}).get("aspectRatio") not in NATIVE_SIZES:
        problems.append("aspectRatio")
    return problems, prompt, image


def image_response(ratio: str, key: str = "inlineData") -> dict[str, Any]:
    data = base64.b64encode(draw_render(NATIVE_SIZES[ratio])).decode()
    parts: list[dict[str, Any]] = [{"text": "Here is the render."}, {key: {"mimeType": "image/png", "data": data}}]
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 1290, "candidatesTokenCount": 1290},
        "modelVersion": MODEL,
    }


def google_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": status, "message": message, "status": code}}, status_code=status)


def build_fake(state: FakeGemini) -> FastAPI:
    app = FastAPI()

    @app.post("/v1beta/models/{target}")
    async def generate(target: str, request: Request) -> Any:
        if state.delay:
            await asyncio.sleep(state.delay)
        if target != f"{MODEL}:generateContent":
            return google_error(404, "NOT_FOUND", f"models/{target} is not found")
        if request.headers.get("x-goog-api-key") != API_KEY:
            return google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
        body = await request.json()
        problems, prompt, image = check_body(body)
        ratio = body.get("generationConfig", {}).get("imageConfig", {}).get("aspectRatio", "")
        state.requests.append({"prompt": prompt, "image": image, "ratio": ratio, "query": str(request.url.query)})
        if problems:
            state.problems.extend(problems)
            return google_error(400, "INVALID_ARGUMENT", "; ".join(problems))
        scenario = state.scenario
        if scenario == "image":
            return image_response(ratio)
        if scenario == "image-snake-case":
            return image_response(ratio, key="inline_data")
        if scenario == "not-an-image":
            response = image_response(ratio)
            response["candidates"][0]["content"]["parts"][1]["inlineData"]["data"] = base64.b64encode(b"nope").decode()
            return response
        if scenario == "429":
            return google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
        if scenario == "503":
            return google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
        if scenario == "400":
            return google_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
        if scenario == "blocked-prompt":
            return {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []}, "modelVersion": MODEL}
        if scenario == "blocked-image":
            return {"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "IMAGE_SAFETY"}]}
        if scenario == "text-only":
            parts = [{"text": "I can only describe this image."}]
            return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}]}
        return google_error(500, "INTERNAL", f"unknown scenario {scenario}")

    return app


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeGemini, str]]:
    state = FakeGemini()
    with serve_in_thread(build_fake(state)) as url:
        yield state, url


@pytest.fixture
def state(fake: tuple[FakeGemini, str]) -> FakeGemini:
    fake[0].scenario, fake[0].delay = "image", 0.0
    fake[0].requests.clear()
    fake[0].problems.clear()
    return fake[0]


@pytest.fixture(scope="module")
async def registry(fake: tuple[FakeGemini, str]) -> AsyncIterator[RendererRegistry]:
    registry = RendererRegistry(gemini_api_key=API_KEY, gemini_base_url=fake[1], gemini_timeout_seconds=5.0)
    try:
        yield registry
    finally:
        await registry.aclose()


@pytest.fixture(scope="module")
def upload() -> bytes:
    image = Image.linear_gradient("L").resize((1600, 900)).convert("RGB")
    ImageDraw.Draw(image).ellipse((600, 250, 1000, 650), fill=(200, 60, 60))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def render_request(upload: bytes, **overrides: Any) -> RenderRequest:
    fields: dict[str, Any] = {"quality": "standard", "aspect_ratio": "16:9", "style": "dramatic", "prompt": None}
    fields |= overrides
    return RenderRequest(image=upload, image_type="image/jpeg", model=MODEL, **fields)


async def no_progress(_: int, __: str) -> None:
    return None


async def failure_of(renderer: Renderer, request: RenderRequest) -> RenderFailure:
    with pytest.raises(RenderFailure) as caught:
        await renderer.render(request, no_progress)
    assert API_KEY not in str(caught.value) + repr(caught.value)
    return caught.value


@pytest.fixture(autouse=True)
def verbose_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Every logger at DEBUG (httpx/httpcore included), so a leaked key would show up."""
    caplog.set_level(logging.DEBUG)


def assert_no_key_logged(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    out, err = capfd.readouterr()
    assert caplog.records  # the adapter (and httpx) did log something
    logged = caplog.text + out + err + "".join(str(r.__dict__) for r in caplog.records)
    assert API_KEY not in logged
    assert API_KEY[:16] not in logged


async def test_renders_through_the_fake_provider(
    registry: RendererRegistry, state: FakeGemini, upload: bytes, caplog: Any, capfd: Any
) -> None:
    assert registry.available() == ["local", MODEL]
    events: list[tuple[int, str]] = []

    async def record(percent: int, stage: str) -> None:
        events.append((percent, stage))

    prompt = "evening light, wet pavement"
    png = await registry.get(MODEL).render(render_request(upload, prompt=prompt), record)
    output = Image.open(io.BytesIO(png))
    assert (output.format, output.size) == ("PNG", (1920, 1080))
    assert output.getpixel((960, 540)) == pytest.approx((230, 200, 120), abs=12)  # the provider's image, fitted
    assert state.problems == []
    (seen,) = state.requests
    assert seen["ratio"] == "16:9"
    assert seen["query"] == ""
    assert prompt in seen["prompt"]
    assert "dramatic" in seen["prompt"]
    assert "geometry" in seen["prompt"]
    sent = Image.open(io.BytesIO(seen["image"]))
    assert sent.format == "JPEG"
    assert sent.size == (1600, 900)
    assert [p for p, _ in events] == [10, 80, 100]
    assert_no_key_logged(caplog, capfd)


@pytest.mark.parametrize(("ratio", "size"), [("9:16", (1080, 1920)), ("1:1", (1920, 1920))])
async def test_output_has_the_exact_size_whatever_the_provider_returns(
    registry: RendererRegistry, state: FakeGemini, upload: bytes, ratio: str, size: tuple[int, int]
) -> None:
    state.scenario = "image-snake-case"  # ``inline_data`` is accepted as well as ``inlineData``
    png = await registry.get(MODEL).render(render_request(upload, aspect_ratio=ratio, style="soft"), no_progress)
    assert Image.open(io.BytesIO(png)).size == size
    sent = Image.open(io.BytesIO(state.requests[0]["image"]))
    a, b = (int(x) for x in ratio.split(":"))
    assert abs(sent.width / sent.height - a / b) < 0.01  # cropped to the ratio before it was sent


@pytest.mark.parametrize(
    ("scenario", "code", "retryable"),
    [
        ("429", "PROVIDER_UNAVAILABLE", True),
        ("503", "PROVIDER_UNAVAILABLE", True),
        ("400", "PROVIDER_REJECTED", False),
        ("blocked-prompt", "CONTENT_BLOCKED", False),
        ("blocked-image", "CONTENT_BLOCKED", False),
        ("text-only", "NO_IMAGE_RETURNED", False),
        ("not-an-image", "PROVIDER_BAD_RESPONSE", True),
    ],
)
async def test_provider_answers_map_to_failures(
    registry: RendererRegistry,
    state: FakeGemini,
    upload: bytes,
    scenario: str,
    code: str,
    retryable: bool,
    caplog: Any,
    capfd: Any,
) -> None:
    state.scenario = scenario
    failure = await failure_of(registry.get(MODEL), render_request(upload))
    assert (failure.error_code, failure.retryable) == (code, retryable), failure
    assert state.problems == []
    assert len(state.requests) == 1
    assert_no_key_logged(caplog, capfd)


async def test_a_wrong_key_is_rejected_not_retried(fake: tuple[FakeGemini, str], upload: bytes) -> None:
    registry = RendererRegistry(gemini_api_key="AIza-wrong", gemini_base_url=fake[1])
    try:
        failure = await failure_of(registry.get(MODEL), render_request(upload))
        assert (failure.error_code, failure.retryable) == ("PROVIDER_REJECTED", False)
    finally:
        await registry.aclose()


async def test_a_slow_provider_times_out_as_retryable(
    fake: tuple[FakeGemini, str], state: FakeGemini, upload: bytes
) -> None:
    state.delay = 1.5
    registry = RendererRegistry(gemini_api_key=API_KEY, gemini_base_url=fake[1], gemini_timeout_seconds=0.5)
    try:
        failure = await failure_of(registry.get(MODEL), render_request(upload))
        assert (failure.error_code, failure.retryable) == ("PROVIDER_UNAVAILABLE", True)
    finally:
        await registry.aclose()


async def test_an_unreachable_provider_is_retryable(upload: bytes, caplog: Any, capfd: Any) -> None:
    registry = RendererRegistry(gemini_api_key=API_KEY, gemini_base_url=f"http://127.0.0.1:{free_port()}")
    try:
        failure = await failure_of(registry.get(MODEL), render_request(upload))
        assert (failure.error_code, failure.retryable) == ("PROVIDER_UNAVAILABLE", True)
    finally:
        await registry.aclose()
    assert_no_key_logged(caplog, capfd)
