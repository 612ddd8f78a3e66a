"""Internal identity: the gateway's signed statement of who is calling, verified by every service.

The gateway strips anything a client sends that looks internal, authenticates the caller, and forwards a short-lived
HS256 token in ``X-Internal-Identity``. Services trust only that token, never client headers, so a service reached
directly (bypassing the gateway) answers 401.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import jwt
from fastapi import Depends, Request
from pydantic import BaseModel, Field

from shared.errors import AuthRequiredError

IDENTITY_HEADER = "x-internal-identity"
INTERNAL_HEADER_PREFIXES = ("x-internal-", "x-forwarded-user", "x-user-", "x-auth-", "x-principal")
ISSUER = "gateway"
AUDIENCE = "internal"
ALGORITHM = "HS256"

AuthMethod = Literal["bearer", "api_key", "service", "none"]


class Identity(BaseModel):
    """Who is calling, as the gateway established it."""

    user_id: str | None = None
    auth_method: AuthMethod = "none"
    key_id: str | None = None
    scopes: list[str] = Field(default_factory=list)
    is_operator: bool = False
    platform: str = "unknown"
    plugin_version: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    service: str | None = None

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None


def sign_identity(identity: Identity, secret: str, ttl_seconds: int = 60) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + ttl_seconds,
        "idn": identity.model_dump(exclude_none=True, exclude_defaults=True),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_identity(token: str, secret: str) -> Identity:
    """Raise ``AuthRequiredError`` for anything but a valid, unexpired token signed with ``secret``."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "iss", "aud"]},
            leeway=5,  # clock skew between the gateway's host and this one
        )
    except jwt.PyJWTError as exc:
        raise AuthRequiredError("Missing or invalid internal identity") from exc
    return Identity.model_validate(claims.get("idn", {}))


def is_internal_header(name: str) -> bool:
    """Headers a client must never be able to set on a request that reaches a service."""
    lowered = name.lower()
    return lowered.startswith(INTERNAL_HEADER_PREFIXES)


async def require_identity(request: Request) -> Identity:
    """FastAPI dependency: the verified caller; the secret comes from the app's settings on ``app.state``."""
    token = request.headers.get(IDENTITY_HEADER)
    if not token:
        raise AuthRequiredError("This service accepts requests from the gateway only")
    return verify_identity(token, request.app.state.settings.internal_identity_secret)


IdentityDep = Annotated[Identity, Depends(require_identity)]


async def require_service_identity(request: Request) -> Identity:
    """Dependency of ``/internal/*`` routes: only another service (never a user through the gateway) may call."""
    identity = await require_identity(request)
    if identity.auth_method != "service":
        raise AuthRequiredError("Internal route: service callers only")
    return identity


ServiceIdentityDep = Annotated[Identity, Depends(require_service_identity)]


async def require_user(request: Request) -> Identity:
    """Dependency of user routes: the gateway authenticated a user (Bearer token or API key)."""
    identity = await require_identity(request)
    if identity.user_id is None:
        raise AuthRequiredError("Authentication required: send a Bearer token or an X-Api-Key")
    return identity


UserIdentityDep = Annotated[Identity, Depends(require_user)]


async def require_user_id(identity: UserIdentityDep) -> str:
    """The caller's user id (``require_user`` has already refused callers without one)."""
    assert identity.user_id is not None
    return identity.user_id


UserIdDep = Annotated[str, Depends(require_user_id)]
