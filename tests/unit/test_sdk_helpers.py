"""The SDK's pure helpers: image loading and type inference, the SSE decoder, ``Retry-After`` parsing and the
backoff schedule, models' tolerance, and webhook verification (signed with the reference ``standardwebhooks``)."""

from __future__ import annotations

import base64
import io
import json
import os
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import renderiq
from renderiq.images import load_image
from renderiq.models import RenderStatus
from renderiq.retries import RetryPolicy, parse_retry_after
from renderiq.sse import ServerSentEvent, SSEDecoder
from standardwebhooks.webhooks import Webhook

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 16
WEBP = b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 16


# -- images ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "media_type"), [(PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp")])
def test_type_comes_from_the_magic_bytes(content: bytes, media_type: str) -> None:
    upload = load_image(content)
    assert upload.media_type == media_type
    assert upload.content == content
    assert upload.filename.startswith("image.")


def test_paths_files_and_explicit_types(tmp_path: Path) -> None:
    path = tmp_path / "viewport.JPG"
    path.write_bytes(b"not sniffable")
    assert load_image(path).media_type == "image/jpeg", "the extension decides when the bytes do not"
    assert load_image(str(path)).filename == "viewport.JPG"
    with path.open("rb") as handle:
        assert load_image(handle).filename == "viewport.JPG"
    assert load_image(io.BytesIO(PNG)).media_type == "image/png"
    assert load_image(b"raw", media_type="image/webp").media_type == "image/webp"
    assert load_image(bytearray(PNG), filename="v.png").filename == "v.png"


@pytest.mark.parametrize("image", [b"GIF89a....", "missing-file.png"])
def test_unusable_images_are_refused_before_sending(image: bytes | str, tmp_path: Path) -> None:
    if isinstance(image, str):
        image = os.fspath(tmp_path / image)
    with pytest.raises(renderiq.ValidationError) as caught:
        load_image(image)
    assert caught.value.error_code == "INVALID_IMAGE"
    assert caught.value.status_code is None


def test_unsupported_explicit_type_and_text_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(renderiq.ValidationError):
        load_image(PNG, media_type="image/gif")
    text = tmp_path / "notes.txt"
    text.write_text("hi")
    with text.open("r") as handle, pytest.raises(TypeError):
        load_image(handle)  # type: ignore[arg-type]


# -- server-sent events ---------------------------------------------------------------------------------------------


def test_sse_decoder_joins_data_lines_and_skips_comments() -> None:
    decoder = SSEDecoder()
    lines = [": keep-alive", "", "event: progress", 'data: {"a":', "data: 1}", "id: 7", "", "data:x", ""]
    events = [e for e in map(decoder.feed, lines) if e is not None]
    assert events == [ServerSentEvent("progress", '{"a":\n1}', "7"), ServerSentEvent("message", "x", "7")]


# -- Retry-After and backoff ----------------------------------------------------------------------------------------


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"retry-after": "3"}) == 3
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after": "-4"}) == 0
    assert parse_retry_after({"retry-after": format_datetime(now + timedelta(seconds=30), usegmt=True)}, now) == 30
    assert parse_retry_after({"retry-after": format_datetime(now - timedelta(seconds=30), usegmt=True)}, now) == 0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "nan"}) is None
    assert parse_retry_after({}) is None


def test_backoff_doubles_up_to_the_cap_with_jitter_and_stops_after_max_retries() -> None:
    policy = RetryPolicy(max_retries=5, initial_backoff=1, max_backoff=4)
    for retry_number, ceiling in enumerate([1, 2, 4, 4, 4]):
        delay = policy.delay(retry_number, None)
        assert delay is not None
        assert ceiling / 2 <= delay <= ceiling
    assert policy.delay(5, None) is None
    assert RetryPolicy(jitter=False, initial_backoff=0.5).delay(2, None) == 2.0
    assert policy.delay(0, 7.0) == 7.0, "Retry-After is waited exactly"
    assert policy.delay(0, 61.0) is None, "beyond max_retry_after the error is raised at once"


# -- models -----------------------------------------------------------------------------------------------------------


def test_models_read_camel_case_and_keep_unknown_fields() -> None:
    status = RenderStatus.model_validate(
        {
            "renderId": "r",
            "status": "completed",
            "progress": 100,
            "creditsUsed": 5,
            "quality": "standard",
            "aspectRatio": "1:1",
            "style": "soft",
            "model": "local",
            "platform": "rhino",
            "createdAt": "2026-01-01T00:00:00Z",
            "outputUrl": "/files/x",
            "newField": 1,
        }
    )
    assert (status.render_id, status.aspect_ratio, status.output_url) == ("r", "1:1", "/files/x")
    assert status.is_final
    assert status.is_completed
    assert status.model_extra == {"newField": 1}


# -- webhook verification ----------------------------------------------------------------------------------------


SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
BODY = json.dumps(
    {
        "event": "render.completed",
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {"renderId": "r-1", "status": "completed", "outputUrl": "https://x/out.png", "creditsUsed": 5},
    }
).encode()


def signed_headers(body: bytes, secret: str = SECRET, at: datetime | None = None) -> dict[str, str]:
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign("evt-1", at, body.decode())
    return {"webhook-id": "evt-1", "webhook-timestamp": str(int(at.timestamp())), "webhook-signature": signature}


def test_a_signed_delivery_verifies_into_an_event() -> None:
    headers = {k.title(): v for k, v in signed_headers(BODY).items()}  # header names in any case
    event = renderiq.verify_webhook(BODY, headers, SECRET)
    assert event.id == "evt-1"
    assert event.event == "render.completed"
    assert event.data.render_id == "r-1"
    assert event.data.output_url == "https://x/out.png"
    assert event.data.credits_used == 5


@pytest.mark.parametrize(
    "tamper",
    ["body", "secret", "old", "missing", "garbled-signature", "bad-secret"],
)
def test_anything_not_signed_right_is_refused(tamper: str) -> None:
    body, secret, headers = BODY, SECRET, signed_headers(BODY)
    if tamper == "body":
        body = BODY.replace(b"r-1", b"r-2")
    elif tamper == "secret":
        secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    elif tamper == "old":
        headers = signed_headers(BODY, at=datetime.now(UTC) - timedelta(minutes=10))
    elif tamper == "missing":
        del headers["webhook-signature"]
    elif tamper == "garbled-signature":
        headers["webhook-signature"] = "v1"
    elif tamper == "bad-secret":
        secret = "whsec_!!!"
    with pytest.raises(renderiq.WebhookVerificationError) as caught:
        renderiq.verify_webhook(body, headers, secret)
    assert caught.value.error_code == "WEBHOOK_VERIFICATION_FAILED"


def test_a_signed_body_that_is_not_an_event_is_refused() -> None:
    body = b'{"hello": "world"}'
    with pytest.raises(renderiq.WebhookVerificationError):
        renderiq.verify_webhook(body, signed_headers(body), SECRET)
