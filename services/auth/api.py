"""HTTP routes of the auth service (thin: parse, call ``service``, shape the response)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from services.auth import service
from services.auth.deps import ContextDep, GatewayCallerDep, SessionDep, UserIdentityDep
from services.auth.errors import BearerRequiredError
from services.auth.models import (
    AuthResponse,
    CreatedKeyOut,
    CreateKeyRequest,
    Jwks,
    KeysPage,
    KeyUsageReport,
    MeResponse,
    RefreshRequest,
    SigninRequest,
    SignupRequest,
    TokenPair,
    VerifyKeyRequest,
)
from shared.errors import documented_errors
from shared.identity import Identity, require_identity
from shared.responses import Envelope, JsonResponse, Message, Success

public = APIRouter(dependencies=[Depends(require_identity)])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
"""On every response that carries a token or a key: no browser, proxy or SDK cache may keep a copy (RFC 6749 §5.1)."""


def _no_store(response: Response) -> None:
    response.headers.update(NO_STORE)


internal = APIRouter()


def _bearer_only(identity: Identity) -> None:
    if identity.auth_method != "bearer":
        raise BearerRequiredError()


@public.post(
    "/api/plugins/auth/signup",
    summary="Create an account",
    status_code=201,
    response_model=AuthResponse,
    responses=documented_errors(409),
)
async def signup(body: SignupRequest, session: SessionDep, ctx: ContextDep, response: Response) -> AuthResponse:
    _no_store(response)
    return await service.signup(session, ctx, body)


@public.post(
    "/api/plugins/auth/signin",
    summary="Sign in",
    description="Every spelling of an address is one account. After repeated failures the account is locked for a "
    "growing time (429 `RATE_LIMIT_EXCEEDED` with `Retry-After`, whatever the password).",
    response_model=AuthResponse,
    responses=documented_errors(429),
)
async def signin(body: SigninRequest, session: SessionDep, ctx: ContextDep, response: Response) -> AuthResponse:
    _no_store(response)
    return await service.signin(session, ctx, body)


@public.post("/api/plugins/auth/refresh", summary="Rotate the tokens", response_model=TokenPair)
async def refresh(body: RefreshRequest, session: SessionDep, ctx: ContextDep, response: Response) -> TokenPair:
    _no_store(response)
    return await service.refresh(session, ctx, body.refresh_token)


@public.post("/api/plugins/auth/signout", summary="Sign out", response_model=Success)
async def signout(body: RefreshRequest, session: SessionDep) -> JsonResponse:
    await service.signout(session, body.refresh_token)
    return JsonResponse({"success": True})


@public.get("/api/plugins/auth/me", summary="The signed-in user", response_model=MeResponse)
async def me(identity: UserIdentityDep, session: SessionDep, ctx: ContextDep) -> JsonResponse:
    assert identity.user_id is not None
    user = await service.me(session, ctx, identity.user_id)
    return JsonResponse({"success": True, "user": user.model_dump(mode="json")})


@public.post(
    "/api/plugins/keys",
    summary="Create an API key",
    description="At most `AUTH_MAX_API_KEYS_PER_USER` (default 100) active keys per account; beyond it 409 "
    "`INVALID_STATE` (revoke one first).",
    status_code=201,
    response_model=Envelope[CreatedKeyOut],
    responses=documented_errors(409),
)
async def create_key(
    body: CreateKeyRequest, identity: UserIdentityDep, session: SessionDep, ctx: ContextDep
) -> JsonResponse:
    _bearer_only(identity)
    assert identity.user_id is not None
    created = await service.create_key(session, identity.user_id, body, ctx.settings.max_api_keys_per_user)
    return JsonResponse({"success": True, "data": created.model_dump(mode="json")}, status_code=201, headers=NO_STORE)


@public.get(
    "/api/plugins/keys",
    summary="List API keys",
    description="Newest first; `nextCursor` (beside `data`) continues the list, null on the last page.",
    response_model=KeysPage,
)
async def list_keys(
    identity: UserIdentityDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JsonResponse:
    _bearer_only(identity)
    assert identity.user_id is not None
    keys, next_cursor = await service.list_keys(session, identity.user_id, limit, cursor)
    return JsonResponse({"success": True, "data": [k.model_dump(mode="json") for k in keys], "nextCursor": next_cursor})


@public.delete("/api/plugins/keys/{key_id}", summary="Revoke an API key", response_model=Message)
async def revoke_key(key_id: str, identity: UserIdentityDep, session: SessionDep) -> JsonResponse:
    _bearer_only(identity)
    assert identity.user_id is not None
    await service.revoke_key(session, identity.user_id, key_id)
    return JsonResponse({"success": True, "message": "API key revoked"})


@internal.get("/.well-known/jwks.json", summary="Token signing keys", response_model=Jwks)
async def jwks(ctx: ContextDep) -> JsonResponse:
    """Public keys only; reachable by the gateway without an identity (it needs them to check identities)."""
    return JsonResponse(ctx.issuer.jwks(), headers={"Cache-Control": "public, max-age=300"})


@internal.post("/internal/keys/verify")
async def verify_key(body: VerifyKeyRequest, _: GatewayCallerDep, session: SessionDep) -> JsonResponse:
    verified = await service.verify_key(session, body.keyHash)
    return JsonResponse({"success": True, "data": verified.model_dump(mode="json")})


@internal.post("/internal/keys/usage")
async def key_usage(body: KeyUsageReport, _: GatewayCallerDep, session: SessionDep) -> JsonResponse:
    updated = await service.record_key_usage(session, body.usage)
    return JsonResponse({"success": True, "data": {"updated": updated}})


@internal.get("/internal/users/deleted")
async def deleted_users(_: GatewayCallerDep, session: SessionDep, since: datetime = Query()) -> JsonResponse:
    return JsonResponse({"success": True, "data": {"userIds": await service.deleted_since(session, since)}})


router = APIRouter()
router.include_router(public)
router.include_router(internal)
