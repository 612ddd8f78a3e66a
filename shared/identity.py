"""Internal identity: who is calling a service, in two kinds of token that cannot stand in for each other.

- **User identity** (``X-Internal-Identity``): the gateway strips anything a client sends that looks internal,
  authenticates the caller and forwards a short-lived EdDSA token signed with its private key. Only the gateway
  holds that key; services verify with the public key, so no other process (a render worker decoding untrusted
  images, the webhooks dispatcher) can mint a user or operator identity. Never accepted on ``/internal`` routes.
- **Service credential** (``X-Internal-Service``): a calling service signs a short-lived EdDSA token with its own
  key, naming itself (``iss``) and the service it calls (``aud``). It carries no user, scope or operator rights:
  the user a call is about is a parameter of that call. Accepted only on ``/internal`` routes, and only from the
  callers each route allows (``callers("auth")``).

A service reached directly (bypassing the gateway) with neither answers 401.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import Depends, Request
from pydantic import BaseModel, Field, ValidationError

from shared.errors import AuthRequiredError, DomainError

IDENTITY_HEADER = "x-internal-identity"
SERVICE_HEADER = "x-internal-service"
INTERNAL_HEADER_PREFIXES = ("x-internal-", "x-forwarded-user", "x-user-", "x-auth-", "x-principal")
INTERNAL_PATH_PREFIX = "/internal/"
ISSUER = "gateway"
AUDIENCE = "internal"
SERVICE_AUDIENCE_PREFIX = "service:"
ALGORITHM = "EdDSA"
CLOCK_SKEW_SECONDS = 5

AuthMethod = Literal["bearer", "api_key", "service", "none"]


class Identity(BaseModel):
    """Who is calling: a user (as the gateway established it), nobody yet, or a service (``service`` set)."""

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


# --- user identity (the gateway's) -------------------------------------------------------------------------------


def sign_identity(identity: Identity, key: Ed25519PrivateKey, ttl_seconds: int = 60) -> str:
    """The gateway's token for ``identity``; a service identity is never signed this way."""
    if identity.auth_method == "service" or identity.service is not None:
        raise ValueError("services sign their own credential (sign_service_token)")
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + ttl_seconds,
        "idn": identity.model_dump(exclude_none=True, exclude_defaults=True),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


VERIFIED_CACHE_MAX = 10_000
_verified: OrderedDict[tuple[str, tuple[bytes, ...]], tuple[Identity, float]] = OrderedDict()
"""Tokens already verified, with the keys that verified them, until they expire: the gateway reuses one token per
caller for half its lifetime, so a service checks a signature (about 0.3 ms of CPU) once per caller, not per request.
"""


def verify_identity(token: str, public_keys: Ed25519PublicKey | tuple[Ed25519PublicKey, ...]) -> Identity:
    """Raise ``AuthRequiredError`` for anything but a valid, unexpired token of the gateway's key (any of
    ``public_keys``, so a key can be rotated without a gap); a service identity inside is refused too."""
    keys = public_keys if isinstance(public_keys, tuple) else (public_keys,)
    entry = (token, tuple(key.public_bytes_raw() for key in keys))  # what verified it is part of the answer
    cached = _verified.get(entry)
    if cached is not None:
        identity, expires = cached
        if time.time() < expires:
            return identity
        del _verified[entry]
    identity, expires = _verify_signed(token, keys)
    _verified[entry] = (identity, expires)
    if len(_verified) > VERIFIED_CACHE_MAX:
        _verified.popitem(last=False)
    return identity


def _verify_signed(token: str, keys: tuple[Ed25519PublicKey, ...]) -> tuple[Identity, float]:
    """The identity and the time it stops being valid (its expiry plus the clock-skew leeway)."""
    for key in keys:
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "iss", "aud"]},
                leeway=CLOCK_SKEW_SECONDS,
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise AuthRequiredError("Missing or invalid internal identity") from exc
        try:
            identity = Identity.model_validate(claims.get("idn", {}))
        except ValidationError:
            break
        if identity.auth_method == "service" or identity.service is not None:
            break
        return identity, float(claims["exp"]) + CLOCK_SKEW_SECONDS
    raise AuthRequiredError("Missing or invalid internal identity")


# --- service credential (each calling service's own) -------------------------------------------------------------


def sign_service_token(caller: str, callee: str, key: Ed25519PrivateKey, ttl_seconds: int = 60) -> str:
    """``caller``'s credential for ``callee``'s ``/internal`` API: who calls whom, and nothing else."""
    now = int(time.time())
    claims = {"iss": caller, "aud": SERVICE_AUDIENCE_PREFIX + callee, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def verify_service_token(token: str, callee: str, key_of: Callable[[str], Ed25519PublicKey | None]) -> str:
    """The calling service's name, for a valid, unexpired token addressed to ``callee`` and signed with the key
    ``key_of`` gives for the caller it names; ``AuthRequiredError`` otherwise (unknown callers included)."""
    try:
        named: object = jwt.decode(token, options={"verify_signature": False}).get("iss")
        caller = named if isinstance(named, str) else ""
        key = key_of(caller) if caller else None
        if key is None:
            raise AuthRequiredError("Internal route: unknown calling service")
        jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=SERVICE_AUDIENCE_PREFIX + callee,
            issuer=caller,
            options={"require": ["exp", "iat", "iss", "aud"]},
            leeway=CLOCK_SKEW_SECONDS,
        )
    except jwt.PyJWTError as exc:
        raise AuthRequiredError("Internal route: missing or invalid service credential") from exc
    return caller


def is_internal_header(name: str) -> bool:
    """Headers a client must never be able to set on a request that reaches a service."""
    lowered = name.lower()
    return lowered.startswith(INTERNAL_HEADER_PREFIXES)


# --- FastAPI dependencies ----------------------------------------------------------------------------------------


async def require_identity(request: Request) -> Identity:
    """The gateway's identity of the caller (maybe anonymous); never on an ``/internal`` route, where only
    service credentials count. Keys come from the app's settings on ``app.state``."""
    token = request.headers.get(IDENTITY_HEADER)
    if not token or request.url.path.startswith(INTERNAL_PATH_PREFIX):
        raise AuthRequiredError("This service accepts requests from the gateway only")
    return verify_identity(token, request.app.state.settings.identity_public_keys())


IdentityDep = Annotated[Identity, Depends(require_identity)]


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


async def require_service_identity(request: Request) -> Identity:
    """Any service this one knows, proven by its own credential (a user identity never counts here)."""
    token = request.headers.get(SERVICE_HEADER)
    if not token:
        raise AuthRequiredError("Internal route: service callers only")
    settings = request.app.state.settings
    caller = verify_service_token(token, request.app.state.runtime.service, settings.caller_public_key)
    return Identity(auth_method="service", service=caller, request_id=request.headers.get("x-request-id"))


ServiceIdentityDep = Annotated[Identity, Depends(require_service_identity)]


def callers(*allowed: str) -> Any:
    """Route dependency of an ``/internal`` route: only these services may call it (403 for another one)."""

    async def require_allowed_caller(identity: ServiceIdentityDep) -> Identity:
        if identity.service not in allowed:
            raise DomainError(
                f"Internal route: {identity.service} may not call it",
                status_code=403,
                error_code="INSUFFICIENT_PERMISSIONS",
                details={"requiredScope": "service:" + "|".join(allowed)},
            )
        return identity

    return Depends(require_allowed_caller)
