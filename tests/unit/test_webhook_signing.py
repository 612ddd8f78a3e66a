"""Webhook secrets, bodies and Standard Webhooks signature headers, checked against the reference verifier.

Receivers verify deliveries with a Standard Webhooks library, so the headers are verified here with the same
library (``standardwebhooks``), not with a re-implementation; secrets must have the contract's form
(``whsec_`` + standard base64 of ≥ 24 bytes) because that library silently mangles anything else; the body must
carry only the contract's fields (API.md "Webhooks"), never the rest of the internal event.
"""

import base64
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.webhooks import signing

EVENT_ID = "0f8e2a1c-6b7d-4c3e-9a5f-1d2b3c4d5e6f"
EVENT_TYPE = "render.completed"
STAMP = datetime(2025, 3, 14, 12, 30, 5, 123456, tzinfo=UTC)
RENDER_EVENT = {
    "renderId": "rnd_123",
    "status": "completed",
    "outputUrl": "https://cdn.example.com/out.png",
    "error": None,
    "errorCode": None,
    "creditsUsed": 4,
    "projectId": "prj_9",
    # internal fields a receiver must never see
    "userId": "usr_secret",
    "inputKey": "inputs/usr_secret/rnd_123.png",
    "metadata": {"plugin": "sketchup"},
    "apiKeyId": "key_1",
}


def whsec(raw: bytes) -> str:
    return "whsec_" + base64.b64encode(raw).decode()


def url_safe_bytes() -> bytes:
    """Bytes whose standard base64 contains both '+' and '/' (so their URL-safe form differs)."""
    raw = bytes([0xFB, 0xFF, 0xBF]) * 10  # standard "+/+/" ..., URL-safe "-_-_" ...
    encoded = base64.b64encode(raw).decode()
    assert "+" in encoded
    assert "/" in encoded
    return raw


def signed(secret: str, payload: bytes, now: datetime | None = None) -> dict[str, str]:
    return signing.headers(secret, EVENT_ID, EVENT_TYPE, payload, now=now)


# -- secrets -------------------------------------------------------------------------------------------------------


def test_new_secret_has_the_contract_form() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert len(raw) >= 24
    assert signing.secret_problem(secret) is None


def test_new_secrets_are_random() -> None:
    secrets = {signing.new_secret() for _ in range(50)}
    assert len(secrets) == 50


def test_new_secret_works_with_the_reference_library() -> None:
    secret = signing.new_secret()
    raw = base64.b64decode(secret.removeprefix("whsec_"))
    payload = signing.body(EVENT_TYPE, STAMP, {"renderId": "rnd_1"})
    headers = signed(secret, payload)
    Webhook(raw).verify(payload, headers)  # the same key bytes, given as bytes


@pytest.mark.parametrize("size", [24, 32, 33, 64])
def test_secret_problem_accepts_enough_standard_base64(size: int) -> None:
    assert signing.secret_problem(whsec(os.urandom(size))) is None


def test_secret_problem_accepts_plus_and_slash() -> None:
    assert signing.secret_problem(whsec(url_safe_bytes())) is None


def _url_safe() -> str:
    return "whsec_" + base64.urlsafe_b64encode(url_safe_bytes()).decode()


def _unpadded() -> str:
    secret = whsec(os.urandom(32))  # 44 characters ending in one "="
    assert secret.endswith("=")
    return secret.rstrip("=")


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        pytest.param(base64.b64encode(os.urandom(32)).decode(), "whsec_", id="missing-prefix"),
        pytest.param("WHSEC_" + base64.b64encode(os.urandom(32)).decode(), "whsec_", id="uppercase-prefix"),
        pytest.param("sk_" + base64.b64encode(os.urandom(32)).decode(), "whsec_", id="other-prefix"),
        pytest.param("whsec_", "base64", id="empty"),
        pytest.param("whsec_" + "!" * 44, "base64", id="not-base64"),
        pytest.param("whsec_" + "a" * 20 + " " + "a" * 23, "base64", id="space-inside"),
        pytest.param(whsec(os.urandom(32)) + "\n", "base64", id="trailing-newline"),
        pytest.param(_url_safe(), "base64", id="url-safe-alphabet"),
        pytest.param(_unpadded(), "base64", id="padding-missing"),
        pytest.param(whsec(os.urandom(32)) + "=", "base64", id="padding-extra"),
        pytest.param("whsec_" + "A" * 41 + "===", "base64", id="padding-triple"),
        pytest.param("whsec_" + "A" * 20 + "==" + "A" * 22, "base64", id="padding-inside"),
        pytest.param(whsec(os.urandom(23)), "24", id="23-bytes"),
        pytest.param(whsec(os.urandom(16)), "24", id="16-bytes"),
        pytest.param(whsec(b"x"), "24", id="1-byte"),
    ],
)
def test_secret_problem_refuses(secret: str, why: str) -> None:
    problem = signing.secret_problem(secret)
    assert problem is not None
    assert why in problem


# -- headers -------------------------------------------------------------------------------------------------------


def test_headers_verify_with_the_reference_library() -> None:
    secret = signing.new_secret()
    payload = signing.render_body(EVENT_TYPE, STAMP, RENDER_EVENT)
    headers = signed(secret, payload)
    parsed = Webhook(secret).verify(payload, headers)
    assert parsed == orjson.loads(payload)


def test_headers_tampered_body_fails_verification() -> None:
    secret = signing.new_secret()
    payload = signing.render_body(EVENT_TYPE, STAMP, RENDER_EVENT)
    headers = signed(secret, payload)
    tampered = payload.replace(b'"creditsUsed":4', b'"creditsUsed":0')
    assert tampered != payload
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, headers)


def test_headers_another_secret_fails_verification() -> None:
    payload = signing.render_body(EVENT_TYPE, STAMP, RENDER_EVENT)
    headers = signed(signing.new_secret(), payload)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(payload, headers)


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp"])
def test_headers_changed_id_or_timestamp_fails_verification(header: str) -> None:
    secret = signing.new_secret()
    payload = signing.render_body(EVENT_TYPE, STAMP, RENDER_EVENT)
    headers = signed(secret, payload)
    forged = {**headers, header: "evt_other" if header == "webhook-id" else str(int(headers[header]) - 1)}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(payload, forged)


def test_headers_contents() -> None:
    secret = signing.new_secret()
    payload = signing.render_body(EVENT_TYPE, STAMP, RENDER_EVENT)
    now = datetime.now(UTC)
    headers = signed(secret, payload, now=now)
    assert headers["webhook-id"] == EVENT_ID
    assert headers["x-webhook-event"] == EVENT_TYPE
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert len(base64.b64decode(headers["webhook-signature"].removeprefix("v1,"), validate=True)) == 32  # SHA-256
    assert headers["content-type"] == "application/json"
    Webhook(secret).verify(payload, headers)


def test_headers_on_retry_keep_the_id_and_refresh_timestamp_and_signature() -> None:
    secret = signing.new_secret()
    payload = signing.render_body(EVENT_TYPE, STAMP, RENDER_EVENT)
    now = datetime.now(UTC)
    first = signed(secret, payload, now=now - timedelta(seconds=120))
    retry = signed(secret, payload, now=now)
    assert first["webhook-id"] == retry["webhook-id"] == EVENT_ID
    assert int(retry["webhook-timestamp"]) - int(first["webhook-timestamp"]) == 120
    assert first["webhook-signature"] != retry["webhook-signature"]
    Webhook(secret).verify(payload, first)
    Webhook(secret).verify(payload, retry)


def test_headers_stale_timestamp_is_rejected_by_receivers() -> None:
    """The timestamp signed is the one sent: a signature made 10 minutes ago is outside the 5-minute tolerance."""
    secret = signing.new_secret()
    payload = signing.body(EVENT_TYPE, STAMP, {"renderId": "rnd_1"})
    headers = signed(secret, payload, now=datetime.now(UTC) - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(payload, headers)


def test_headers_with_a_non_utc_now_verify() -> None:
    secret = signing.new_secret()
    payload = signing.body(EVENT_TYPE, STAMP, {"renderId": "rnd_1"})
    now = datetime.now(timezone(timedelta(hours=-3)))  # the same instant as datetime.now(UTC), another offset
    headers = signed(secret, payload, now=now)
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    Webhook(secret).verify(payload, headers)


# -- bodies --------------------------------------------------------------------------------------------------------


def test_body_shape() -> None:
    payload = signing.body("webhook.test", STAMP, {"webhookId": "wh_1", "message": "hi", "nothing": None})
    parsed = orjson.loads(payload)
    assert list(parsed) == ["event", "timestamp", "data"]
    assert parsed["event"] == "webhook.test"
    assert parsed["timestamp"] == "2025-03-14T12:30:05.123456Z"
    assert parsed["data"] == {"webhookId": "wh_1", "message": "hi"}


def test_body_timestamp_is_converted_to_utc() -> None:
    local = STAMP.astimezone(timezone(timedelta(hours=5, minutes=30)))
    parsed = orjson.loads(signing.body(EVENT_TYPE, local, {}))
    assert parsed["timestamp"] == "2025-03-14T12:30:05.123456Z"
    assert parsed["data"] == {}


def test_body_is_compact_json() -> None:
    payload = signing.body(EVENT_TYPE, STAMP, {"renderId": "rnd_1"})
    expected = b'{"event":"render.completed","timestamp":"2025-03-14T12:30:05.123456Z","data":{"renderId":"rnd_1"}}'
    assert payload == expected


def test_render_body_keeps_only_the_contract_fields() -> None:
    parsed = orjson.loads(signing.render_body(EVENT_TYPE, STAMP, RENDER_EVENT))
    assert parsed["event"] == EVENT_TYPE
    assert parsed["data"] == {
        "renderId": "rnd_123",
        "status": "completed",
        "outputUrl": "https://cdn.example.com/out.png",
        "creditsUsed": 4,
        "projectId": "prj_9",
    }


def test_render_body_failed_render() -> None:
    event: dict[str, Any] = {
        "renderId": "rnd_7",
        "status": "failed",
        "outputUrl": None,
        "error": "The image could not be decoded",
        "errorCode": "INVALID_IMAGE",
        "creditsUsed": 0,
        "userId": "usr_secret",
    }
    parsed = orjson.loads(signing.render_body("render.failed", STAMP, event))
    assert parsed["data"] == {
        "renderId": "rnd_7",
        "status": "failed",
        "error": "The image could not be decoded",
        "errorCode": "INVALID_IMAGE",
        "creditsUsed": 0,  # a falsy value is still a value: only None is dropped
    }


def test_render_data_fields_are_the_contract() -> None:
    assert set(signing.RENDER_DATA_FIELDS) == {
        "renderId",
        "status",
        "outputUrl",
        "error",
        "errorCode",
        "creditsUsed",
        "projectId",
    }
