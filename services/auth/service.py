"""Business logic of the auth service: accounts, token rotation, API keys. Flushes; the caller commits."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from services.auth import events, lockout
from services.auth.config import Settings
from services.auth.errors import (
    AlreadyExistsError,
    ApiKeyRefusedError,
    InvalidCredentialsError,
    InvalidTokenError,
    NotFoundError,
    RefreshFailedError,
    TooManyKeysError,
)
from services.auth.models import (
    ApiKey,
    AuthResponse,
    CreatedKeyOut,
    CreateKeyRequest,
    Credits,
    KeyOut,
    RefreshToken,
    SigninRequest,
    SignupRequest,
    TokenPair,
    User,
    UserOut,
    VerifiedKey,
)
from services.auth.passwords import Passwords
from services.auth.tokens import TokenIssuer
from shared import apikeys
from shared.cursor import decode_cursor, encode_cursor
from shared.emails import normalize_email
from shared.errors import DomainError
from shared.internal_client import InternalClient

log = structlog.stdlib.get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass
class AuthContext:
    """The process-wide collaborators of the auth service logic."""

    settings: Settings
    passwords: Passwords
    issuer: TokenIssuer
    credits: InternalClient


# --- credits (owned by the credits service, reached over its internal API) ----------------------------------------
async def _credits_of(ctx: AuthContext, user_id: str) -> Credits:
    return Credits.model_validate(await ctx.credits.request("GET", f"/internal/credits/{user_id}"))


async def grant_signup_credits(ctx: AuthContext, user_id: str) -> Credits:
    if ctx.settings.signup_credits <= 0:
        return await _credits_of(ctx, user_id)
    body = {"credits": ctx.settings.signup_credits, "reference": f"signup:{user_id}", "reason": "signup"}
    return Credits.model_validate(await ctx.credits.request("POST", f"/internal/credits/{user_id}/grants", json=body))


def _user_out(user: User, credits: Credits) -> UserOut:
    assert user.created_at is not None
    return UserOut(id=user.id, email=user.email, name=user.name, created_at=user.created_at, credits=credits)


# --- tokens -------------------------------------------------------------------------------------------------------
async def _issue_pair(
    session: AsyncSession, ctx: AuthContext, user: User, family_id: str, parent_id: str | None = None
) -> TokenPair:
    access, exp = ctx.issuer.access_token(user.id, is_operator=user.is_operator)
    raw_refresh = "rt_" + secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id,
            parent_id=parent_id,
            token_hash=_token_hash(raw_refresh),
            expires_at=_now() + timedelta(seconds=ctx.settings.refresh_token_ttl_seconds),
        )
    )
    await session.flush()
    return TokenPair(access_token=access, refresh_token=raw_refresh, expires_at=datetime.fromtimestamp(exp, UTC))


async def _active_user_by_email(session: AsyncSession, email: str) -> User | None:
    """Looked up by canonical address (``shared.emails``): every spelling of an address finds the same account."""
    canonical = normalize_email(email)
    return (
        await session.execute(select(User).where(col(User.email) == canonical, col(User.deleted_at).is_(None)))
    ).scalar_one_or_none()


async def active_user(session: AsyncSession, user_id: str) -> User | None:
    return (
        await session.execute(select(User).where(col(User.id) == user_id, col(User.deleted_at).is_(None)))
    ).scalar_one_or_none()


async def create_user(
    session: AsyncSession, ctx: AuthContext, *, email: str, password: str, name: str | None, operator: bool = False
) -> User:
    email = normalize_email(email)  # unique on the canonical form: another spelling is the same account (409)
    exists = (await session.execute(select(col(User.id)).where(col(User.email) == email))).first()
    if exists:
        raise AlreadyExistsError("An account with this email already exists", details={"field": "email"})
    is_operator = operator or email in ctx.settings.admin_email_set()
    user = User(email=email, name=name, password_hash=await ctx.passwords.hash(password), is_operator=is_operator)
    try:
        async with session.begin_nested():  # two signups of one email at once: the loser gets 409, not 500
            session.add(user)
            await session.flush()
    except IntegrityError as exc:
        raise AlreadyExistsError("An account with this email already exists", details={"field": "email"}) from exc
    await session.refresh(user)
    return user


async def signup(session: AsyncSession, ctx: AuthContext, body: SignupRequest) -> AuthResponse:
    user = await create_user(session, ctx, email=str(body.email), password=body.password, name=body.name)
    # Granted before the commit: if credits is unreachable the signup fails whole (503) and can be retried; the
    # grant is idempotent by reference, so a retry never pays twice.
    credits = await grant_signup_credits(ctx, user.id)
    pair = await _issue_pair(session, ctx, user, family_id=str(uuid.uuid4()))
    log.info("user_signed_up", user_id=user.id, operator=user.is_operator)
    return AuthResponse(**pair.model_dump(), user=_user_out(user, credits))


async def signin(session: AsyncSession, ctx: AuthContext, body: SigninRequest) -> AuthResponse:
    """Checks the password only when the address is not locked out (``services.auth.lockout``); the same steps
    for unknown addresses as for known ones, so neither the answer nor the lock-out reveals an account."""
    email = normalize_email(body.email)
    failures = await lockout.reserve_attempt(session, ctx.settings, email)  # commits; 429 while locked
    user = await _active_user_by_email(session, email)
    valid, new_hash = await ctx.passwords.verify(body.password, user.password_hash if user else None)
    if user is None or not valid:
        if failures >= ctx.settings.signin_free_failures:
            log.info("signin_lockout_started", account_key=lockout.email_key(email)[:12], failures=failures)
        raise InvalidCredentialsError()
    await lockout.forget_failures(session, email)
    if new_hash:
        user.password_hash = new_hash
        session.add(user)
    pair = await _issue_pair(session, ctx, user, family_id=str(uuid.uuid4()))
    log.info("user_signed_in", user_id=user.id)
    return AuthResponse(**pair.model_dump(), user=_user_out(user, await _credits_of(ctx, user.id)))


async def _revoke_family(session: AsyncSession, family_id: str) -> None:
    await session.execute(
        update(RefreshToken)
        .where(col(RefreshToken.family_id) == family_id, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=_now())
    )


async def refresh(session: AsyncSession, ctx: AuthContext, raw_token: str) -> TokenPair:
    """Rotate: spend the presented token, return a new pair. A spent token presented again burns its family."""
    stmt = select(RefreshToken).where(col(RefreshToken.token_hash) == _token_hash(raw_token)).with_for_update()
    token = (await session.execute(stmt)).scalar_one_or_none()
    if token is None:
        raise RefreshFailedError()
    if token.used_at is not None or token.revoked_at is not None:
        if token.used_at is not None:
            log.warning("refresh_token_reuse_detected", user_id=token.user_id, family_id=token.family_id)
        await _revoke_family(session, token.family_id)
        await session.commit()  # the revocation must stick although the request fails
        raise RefreshFailedError()
    if token.expires_at <= _now():
        raise RefreshFailedError()
    user = await active_user(session, token.user_id)
    if user is None:
        raise RefreshFailedError()
    token.used_at = _now()
    session.add(token)
    return await _issue_pair(session, ctx, user, family_id=token.family_id, parent_id=token.id)


async def signout(session: AsyncSession, raw_token: str) -> None:
    """Revoke the whole family of the presented token; unknown tokens are ignored (nothing to reveal)."""
    token = (
        await session.execute(select(RefreshToken).where(col(RefreshToken.token_hash) == _token_hash(raw_token)))
    ).scalar_one_or_none()
    if token is not None:
        await _revoke_family(session, token.family_id)


async def me(session: AsyncSession, ctx: AuthContext, user_id: str) -> UserOut:
    user = await active_user(session, user_id)
    if user is None:
        raise InvalidTokenError("The account of this token no longer exists")
    return _user_out(user, await _credits_of(ctx, user.id))


# --- API keys -----------------------------------------------------------------------------------------------------
def _key_active(key: ApiKey, now: datetime) -> bool:
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


def _key_out(key: ApiKey, now: datetime) -> KeyOut:
    assert key.created_at is not None
    return KeyOut(
        id=key.id,
        name=key.name,
        keyPrefix=key.key_prefix,
        scopes=key.scopes,
        expiresAt=key.expires_at,
        lastUsedAt=key.last_used_at,
        isActive=_key_active(key, now),
        createdAt=key.created_at,
    )


async def _active_key_count(session: AsyncSession, user_id: str) -> int:
    stmt = select(func.count()).where(
        col(ApiKey.user_id) == user_id,
        col(ApiKey.revoked_at).is_(None),
        (col(ApiKey.expires_at).is_(None)) | (col(ApiKey.expires_at) > func.now()),
    )
    return int((await session.execute(stmt)).scalar_one())


async def create_key(
    session: AsyncSession, user_id: str, body: CreateKeyRequest, max_active: int | None = None
) -> CreatedKeyOut:
    """A new key, unless the account already holds ``max_active`` active ones (409 ``INVALID_STATE``).

    The user's row is locked first, so concurrent creations of one account are counted one after the other and
    can never pass the cap together.
    """
    if body.expiresAt is not None and body.expiresAt <= _now():
        raise DomainError("expiresAt must be in the future", details={"field": "expiresAt", "reason": "in the past"})
    if max_active is not None:
        await session.execute(select(col(User.id)).where(col(User.id) == user_id).with_for_update())
        if await _active_key_count(session, user_id) >= max_active:
            raise TooManyKeysError(max_active)
    raw = apikeys.generate()
    key = ApiKey(
        user_id=user_id,
        name=body.name,
        key_hash=apikeys.key_hash(raw),
        key_prefix=apikeys.display_prefix(raw),
        scopes=list(body.scopes),
        expires_at=body.expiresAt,
    )
    session.add(key)
    await session.flush()
    await session.refresh(key)
    assert key.created_at is not None
    log.info("api_key_created", key_id=key.id, user_id=user_id, scopes=key.scopes)
    return CreatedKeyOut(
        id=key.id,
        name=key.name,
        key=raw,
        keyPrefix=key.key_prefix,
        scopes=key.scopes,
        expiresAt=key.expires_at,
        createdAt=key.created_at,
    )


async def list_keys(
    session: AsyncSession, user_id: str, limit: int, cursor: str | None = None
) -> tuple[list[KeyOut], str | None]:
    """One page of the user's keys, newest first, and the cursor of the next page (None on the last)."""
    stmt = select(ApiKey).where(col(ApiKey.user_id) == user_id).order_by(col(ApiKey.seq).desc()).limit(limit + 1)
    if cursor is not None:
        stmt = stmt.where(col(ApiKey.seq) < decode_cursor(cursor))
    rows = list((await session.execute(stmt)).scalars())
    page = rows[:limit]
    now = _now()
    next_cursor = encode_cursor(int(page[-1].seq or 0)) if len(rows) > limit else None
    return [_key_out(k, now) for k in page], next_cursor


async def revoke_key(session: AsyncSession, user_id: str, key_id: str) -> None:
    """Revoke one of the caller's keys; another user's key is indistinguishable from a missing one."""
    key = (
        await session.execute(
            select(ApiKey).where(col(ApiKey.id) == key_id, col(ApiKey.user_id) == user_id).with_for_update()
        )
    ).scalar_one_or_none()
    if key is None:
        raise NotFoundError("API key not found")
    if key.revoked_at is None:
        key.revoked_at = _now()
        session.add(key)
        await events.key_revoked(session, key_id=key.id, user_id=user_id, key_hash=key.key_hash)
        log.info("api_key_revoked", key_id=key.id, user_id=user_id)


async def revoke_all_keys(session: AsyncSession, user_id: str) -> int:
    keys = (
        await session.execute(
            select(ApiKey).where(col(ApiKey.user_id) == user_id, col(ApiKey.revoked_at).is_(None)).with_for_update()
        )
    ).scalars()
    count = 0
    for key in keys:
        await revoke_key(session, user_id, key.id)
        count += 1
    return count


async def verify_key(session: AsyncSession, key_hash: str) -> VerifiedKey:
    """The gateway's cache-miss path: who owns this key and what it may do, or why it is refused."""
    row = (
        await session.execute(
            select(ApiKey, User).join(User, col(User.id) == col(ApiKey.user_id)).where(col(ApiKey.key_hash) == key_hash)
        )
    ).first()
    if row is None or row[1].deleted_at is not None:
        raise ApiKeyRefusedError("Invalid API key", error_code="INVALID_API_KEY")
    key, user = row
    if key.revoked_at is not None:
        raise ApiKeyRefusedError("This API key has been revoked", error_code="API_KEY_REVOKED")
    if key.expires_at is not None and key.expires_at <= _now():
        raise ApiKeyRefusedError("This API key has expired", error_code="API_KEY_EXPIRED")
    return VerifiedKey(
        keyId=key.id, userId=key.user_id, scopes=key.scopes, expiresAt=key.expires_at, isOperator=user.is_operator
    )


async def record_key_usage(session: AsyncSession, usage: dict[str, datetime]) -> int:
    """Apply a gateway's batch of ``lastUsedAt`` values in one statement per key (never moving time backwards)."""
    for key_id, used_at in usage.items():
        await session.execute(
            update(ApiKey)
            .where(col(ApiKey.id) == key_id)
            .where((col(ApiKey.last_used_at).is_(None)) | (col(ApiKey.last_used_at) < used_at))
            .values(last_used_at=used_at)
        )
    return len(usage)


# --- operator actions (CLI) ---------------------------------------------------------------------------------------
async def user_by_email(session: AsyncSession, email: str) -> User:
    user = await _active_user_by_email(session, email)
    if user is None:
        raise NotFoundError(f"No active user with email {normalize_email(email)}")
    return user


async def make_operator(session: AsyncSession, email: str) -> User:
    user = await user_by_email(session, email)
    user.is_operator = True
    session.add(user)
    return user


async def delete_user(session: AsyncSession, email: str) -> User:
    """Soft-delete: keys revoked, refresh families revoked, gateways told to refuse the user's access tokens."""
    user = await user_by_email(session, email)
    user.deleted_at = _now()
    session.add(user)
    await revoke_all_keys(session, user.id)
    await session.execute(
        update(RefreshToken)
        .where(col(RefreshToken.user_id) == user.id, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=_now())
    )
    await events.user_deleted(session, user_id=user.id)
    return user


async def deleted_since(session: AsyncSession, since: datetime) -> list[str]:
    rows = await session.execute(select(col(User.id)).where(col(User.deleted_at) >= since))
    return [r[0] for r in rows]
