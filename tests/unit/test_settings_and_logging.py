"""Placeholder secrets and dev keys are refused outside dev; logs never carry secrets."""

import json
import logging
from typing import Any

import pytest
import structlog

from services.gateway.config import Settings as GatewaySettings
from shared.keys import (
    GATEWAY_IDENTITY,
    dev_private_key,
    generate_private_text,
    load_private_key,
    private_text,
    public_text,
)
from shared.logging import REDACTED, configure_logging, redact
from shared.settings import ServiceSettings


def real_keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A production deployment's keys: the gateway's pair, a service's own key and its callers' public keys."""
    gateway, auth = generate_private_text(), generate_private_text()
    env = {
        "INTERNAL_IDENTITY_PUBLIC_KEY": public_text(load_private_key(gateway)),
        "GATEWAY_IDENTITY_PRIVATE_KEY": gateway,
        "SERVICE_IDENTITY_KEY": auth,
        "SERVICE_IDENTITY_PUBLIC_KEYS": json.dumps({"auth": public_text(load_private_key(auth))}),
        "STORAGE_SIGNING_SECRET": "another-real-long-random-secret-value-0123",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_placeholder_secret_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    real_keys(monkeypatch)
    monkeypatch.delenv("STORAGE_SIGNING_SECRET")
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(ValueError, match="STORAGE_SIGNING_SECRET"):
        ServiceSettings()


def test_placeholder_secret_accepted_in_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "dev")
    assert ServiceSettings().is_dev


def test_real_secrets_accepted_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    real_keys(monkeypatch)
    monkeypatch.setenv("APP_ENV", "production")
    settings = GatewaySettings()
    assert settings.app_env == "production"
    assert settings.caller_public_key("auth") is not None
    assert settings.caller_public_key("renders") is None, "a caller outside the map is unknown"


def test_missing_identity_keys_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    real_keys(monkeypatch)
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.delenv("GATEWAY_IDENTITY_PRIVATE_KEY")
    with pytest.raises(ValueError, match="GATEWAY_IDENTITY_PRIVATE_KEY is not set"):
        GatewaySettings()
    monkeypatch.delenv("INTERNAL_IDENTITY_PUBLIC_KEY")
    with pytest.raises(ValueError, match="INTERNAL_IDENTITY_PUBLIC_KEY is not set"):
        ServiceSettings()


def test_service_key_required_only_to_call_another_service(monkeypatch: pytest.MonkeyPatch) -> None:
    real_keys(monkeypatch)
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.delenv("SERVICE_IDENTITY_KEY")
    settings = ServiceSettings()  # a process that calls no other service needs no key of its own
    with pytest.raises(ValueError, match="SERVICE_IDENTITY_KEY is not set"):
        settings.service_private_key("renders")


@pytest.mark.parametrize(
    ("name", "dev_key"),
    [
        ("INTERNAL_IDENTITY_PUBLIC_KEY", lambda: public_text(dev_private_key(GATEWAY_IDENTITY))),
        ("GATEWAY_IDENTITY_PRIVATE_KEY", lambda: private_text(dev_private_key(GATEWAY_IDENTITY))),
        ("SERVICE_IDENTITY_KEY", lambda: private_text(dev_private_key("renders"))),
        ("SERVICE_IDENTITY_PUBLIC_KEYS", lambda: json.dumps({"auth": public_text(dev_private_key("auth"))})),
    ],
)
def test_dev_keys_refused_in_production(monkeypatch: pytest.MonkeyPatch, name: str, dev_key: Any) -> None:
    """The dev keys are derived from public names: anyone could sign with them."""
    real_keys(monkeypatch)
    monkeypatch.setenv(name, dev_key())
    GatewaySettings(app_env="dev")  # fine on a laptop
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(ValueError, match="dev key"):
        GatewaySettings()


def test_a_refusal_never_prints_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    env = real_keys(monkeypatch)
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("INTERNAL_IDENTITY_PUBLIC_KEY", public_text(dev_private_key(GATEWAY_IDENTITY)))
    with pytest.raises(ValueError, match="dev key") as refused:
        GatewaySettings()
    for name in ("GATEWAY_IDENTITY_PRIVATE_KEY", "SERVICE_IDENTITY_KEY", "STORAGE_SIGNING_SECRET"):
        assert env[name][-8:] not in str(refused.value), f"{name} in the error"


@pytest.mark.parametrize(
    "value", ["not-a-key", "c2hvcnQ", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"]
)
def test_malformed_keys_refused_everywhere(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("APP_ENV", "dev")
    monkeypatch.setenv("INTERNAL_IDENTITY_PUBLIC_KEY", value)
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        ServiceSettings()


def test_redact_by_key_and_by_value() -> None:
    event = {
        "password": "hunter22",
        "headers": {"Authorization": "Bearer abc", "accept": "json"},
        "note": "key rk_live_AbCdEfGh12345678AbCdEfGh12345678 used",
        "jwt": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl",
    }
    cleaned = redact(event)
    assert cleaned["password"] == REDACTED
    assert cleaned["headers"] == {"Authorization": REDACTED, "accept": "json"}
    assert "rk_live_" not in cleaned["note"]
    assert cleaned["jwt"] == REDACTED


def test_json_log_lines_carry_request_id_and_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("unit", json_logs=True)
    structlog.contextvars.bind_contextvars(request_id="req-123")
    structlog.stdlib.get_logger("t").info("signed_in", password="hunter22", user="u1")
    logging.getLogger("stdlib").warning("token=%s", "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 2
    assert all(line["request_id"] == "req-123" and line["service"] == "unit" for line in lines)
    assert "hunter22" not in json.dumps(lines)
    assert "eyJhbGci" not in json.dumps(lines)
    structlog.contextvars.clear_contextvars()
