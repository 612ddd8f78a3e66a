"""Placeholder secrets are refused outside dev; logs never carry secrets."""

import json
import logging

import pytest
import structlog

from shared.logging import REDACTED, configure_logging, redact
from shared.settings import ServiceSettings


def test_placeholder_secret_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(ValueError, match="INTERNAL_IDENTITY_SECRET"):
        ServiceSettings()


def test_placeholder_secret_accepted_in_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "dev")
    assert ServiceSettings().is_dev


def test_real_secrets_accepted_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("INTERNAL_IDENTITY_SECRET", "a-real-long-random-secret-value-0123456789")
    monkeypatch.setenv("STORAGE_SIGNING_SECRET", "another-real-long-random-secret-value-0123")
    assert ServiceSettings().app_env == "production"


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
