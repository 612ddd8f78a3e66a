"""Tokens as the stack's own processes sign them (the stack runs with APP_ENV=dev, so with the dev keys): for tests
that call a service directly, as the gateway or as another service would."""

from __future__ import annotations

from typing import Any

from shared.identity import IDENTITY_HEADER, SERVICE_HEADER, Identity, sign_identity, sign_service_token
from shared.keys import GATEWAY_IDENTITY, dev_private_key


def gateway_token(identity: Identity, ttl_seconds: int = 60) -> str:
    """What the dev stack's gateway would forward for ``identity``."""
    return sign_identity(identity, dev_private_key(GATEWAY_IDENTITY), ttl_seconds)


def gateway_headers(**fields: Any) -> dict[str, str]:
    """``X-Internal-Identity`` of a caller the gateway authenticated (``user_id=...``, ``is_operator=...``)."""
    return {IDENTITY_HEADER: gateway_token(Identity(**fields))}


def service_headers(caller: str, callee: str) -> dict[str, str]:
    """``X-Internal-Service`` of the dev stack's ``caller`` calling ``callee``'s ``/internal`` API."""
    return {SERVICE_HEADER: sign_service_token(caller, callee, dev_private_key(caller))}
