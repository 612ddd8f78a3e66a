"""structlog set-up: JSON lines outside dev, console in dev; request/event ids from contextvars; no secrets."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_KEY_PATTERN = re.compile(
    r"pass(word)?|secret|token|authorization|api[_-]?key|cookie|signature|credential", re.IGNORECASE
)
# Values that look like credentials whatever key they sit under: bearer JWTs, API keys, webhook secrets.
SECRET_VALUE_PATTERN = re.compile(
    r"(eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)|(rk_live_[A-Za-z0-9]{8,})|(whsec_[A-Za-z0-9+/=]{8,})"
)
REDACTED = "[redacted]"


def redact(value: Any, key: str = "") -> Any:
    """Return ``value`` with anything secret-looking replaced; used on every log event."""
    if key and SECRET_KEY_PATTERN.search(key):
        return REDACTED
    if isinstance(value, str):
        return SECRET_VALUE_PATTERN.sub(REDACTED, value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def _redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = redact(event_dict[key], key if key != "event" else "")
    return event_dict


def configure_logging(service: str, *, json_logs: bool, level: str = "INFO") -> None:
    """Configure structlog and route stdlib logging (uvicorn, aiokafka, sqlalchemy) through it."""
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_processor,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared_processors, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
