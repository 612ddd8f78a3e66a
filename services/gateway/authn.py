"""Who is calling: Bearer JWTs checked locally against auth's JWKS; API keys through auth, cached.

Everything here is on the request path, so the common case does no I/O: JWTs verify against cached public keys,
and API keys hit an in-memory cache that ``apikey.revoked`` / ``user.deleted`` events invalidate at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import jwt
import orjson
import structlog

from services.gateway.config import Settings
from services.gateway.errors import (
    ApiKeyExpiredError,
    ApiKeyRevokedError,
    InvalidApiKeyError,
    InvalidTokenError,
    TokenExpiredError,
    UpstreamUnavailableError,
)
from shared import apikeys
from shared.identity import SERVICE_HEADER, sign_service_token

log = structlog.stdlib.get_logger(__name__)

ALLOWED_ALGORITHMS = ("EdDSA",)
CLOCK_SKEW_SECONDS = 5


def service_headers(settings: Settings, request_id: str | None = None) -> dict[str, str]:
    """The gateway's own service credential for auth's ``/internal`` API (no user, no operator rights)."""
    token = sign_service_token(
        "gateway", "auth", settings.service_private_key("gateway"), settings.internal_identity_ttl_seconds
    )
    headers = {SERVICE_HEADER: token, "content-type": "application/json"}
    if request_id:
        headers["x-request-id"] = request_id
    return headers


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    auth_method: str
    scopes: tuple[str, ...]
    is_operator: bool
    key_id: str | None = None


class Denylist:
    """Users deleted recently: their access tokens issued before the deletion are refused until they expire."""

    def __init__(self) -> None:
        self._deleted: dict[str, float] = {}

    def add(self, user_id: str, at: float | None = None) -> None:
        self._deleted[user_id] = at if at is not None else time.time()

    def refuses(self, user_id: str, issued_at: float) -> bool:
        deleted = self._deleted.get(user_id)
        return deleted is not None and issued_at <= deleted


class JwtVerifier:
    def __init__(self, settings: Settings, session: aiohttp.ClientSession, denylist: Denylist) -> None:
        self.settings = settings
        self.session = session
        self.denylist = denylist
        self._keys: dict[str, jwt.PyJWK] = {}
        self._last_fetch = 0.0
        self._fetch_lock = asyncio.Lock()
        # Verified tokens until they expire: the signature check is the costliest step of a Bearer request.
        self._verified: OrderedDict[str, tuple[Principal, float, float, str]] = OrderedDict()

    async def refresh_keys(self) -> None:
        async with self.session.get(self.settings.auth_url + "/.well-known/jwks.json") as response:
            response.raise_for_status()
            jwks = orjson.loads(await response.read())
        keys = {}
        for jwk in jwks.get("keys", []):
            if jwk.get("alg") in ALLOWED_ALGORITHMS and jwk.get("kid"):
                keys[jwk["kid"]] = jwt.PyJWK(jwk)
        self._keys = keys

    async def run_refresh(self) -> None:
        """Re-read the JWKS periodically, so a key withdrawn by auth stops verifying everywhere."""
        while True:
            await asyncio.sleep(self.settings.jwks_refresh_seconds)
            try:
                await self.refresh_keys()
                self._last_fetch = time.monotonic()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("jwks_refresh_failed", error=type(exc).__name__)

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        key = self._keys.get(kid)
        if key is not None:
            return key
        # Unknown kid: a rotation may have happened. Refetch, but at most every few seconds whatever callers send.
        async with self._fetch_lock:
            if kid not in self._keys and time.monotonic() - self._last_fetch >= self.settings.jwks_min_refetch_seconds:
                self._last_fetch = time.monotonic()
                try:
                    await self.refresh_keys()
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    log.warning("jwks_fetch_failed", error=type(exc).__name__)
                    if not self._keys:
                        raise UpstreamUnavailableError("auth") from exc
        return self._keys.get(kid)

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            principal, issued_at, expires_at, kid = cached
            if kid not in self._keys:  # its signing key was withdrawn from the JWKS
                del self._verified[token]
                raise InvalidTokenError()
            if time.time() >= expires_at:
                del self._verified[token]
                raise TokenExpiredError()
            if self.denylist.refuses(principal.user_id, issued_at):
                raise InvalidTokenError()
            return principal
        principal, issued_at, expires_at, kid = await self._verify_signed(token)
        self._verified[token] = (principal, issued_at, expires_at, kid)
        if len(self._verified) > self.settings.jwt_cache_max_entries:
            self._verified.popitem(last=False)
        return principal

    async def _verify_signed(self, token: str) -> tuple[Principal, float, float, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidTokenError() from exc
        if header.get("alg") not in ALLOWED_ALGORITHMS or not isinstance(header.get("kid"), str):
            raise InvalidTokenError()
        key = await self._key(header["kid"])
        if key is None:
            raise InvalidTokenError()
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
                leeway=CLOCK_SKEW_SECONDS,  # for iat/nbf between hosts; expiry is checked strictly below
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpiredError() from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError() from exc
        if float(claims["exp"]) <= time.time():
            raise TokenExpiredError()
        user_id = str(claims["sub"])
        if self.denylist.refuses(user_id, float(claims["iat"])):
            raise InvalidTokenError()
        principal = Principal(
            user_id=user_id,
            auth_method="bearer",
            scopes=apikeys.SCOPES,
            is_operator="operator" in (claims.get("roles") or ()),
        )
        return principal, float(claims["iat"]), float(claims["exp"]), header["kid"]


@dataclass(slots=True)
class CachedKey:
    cached_at: float
    principal: Principal | None = None
    expires_at: float | None = None
    refusal: str | None = None  # INVALID_API_KEY | API_KEY_REVOKED | API_KEY_EXPIRED


REFUSALS = {
    "INVALID_API_KEY": InvalidApiKeyError,
    "API_KEY_REVOKED": ApiKeyRevokedError,
    "API_KEY_EXPIRED": ApiKeyExpiredError,
}


class ApiKeyVerifier:
    """Checksum first (no I/O), then the cache, then auth; concurrent misses of one key share one call."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession, usage: KeyUsageRecorder) -> None:
        self.settings = settings
        self.session = session
        self.usage = usage
        self._cache: OrderedDict[str, CachedKey] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[CachedKey]] = {}
        # Revocations seen on apikey.events: an answer from auth that was in flight when the event arrived must
        # not put the key back in the cache as valid.
        self._revoked_digests: OrderedDict[str, None] = OrderedDict()
        self._revoked_key_ids: OrderedDict[str, None] = OrderedDict()

    async def verify(self, key: str, request_id: str | None = None) -> Principal:
        if not apikeys.is_well_formed(key):
            raise InvalidApiKeyError()
        digest = apikeys.key_hash(key)
        entry = self._cached(digest)
        if entry is None:
            entry = await self._load(digest, request_id)
        if entry.refusal:
            raise REFUSALS[entry.refusal]()
        assert entry.principal is not None
        if entry.expires_at is not None and entry.expires_at <= time.time():
            raise ApiKeyExpiredError()
        self.usage.touch(entry.principal.key_id)
        return entry.principal

    def _cached(self, digest: str) -> CachedKey | None:
        entry = self._cache.get(digest)
        if entry is None:
            return None
        ttl = (
            self.settings.api_key_negative_cache_seconds
            if entry.refusal == "INVALID_API_KEY"
            else (self.settings.api_key_cache_seconds)
        )
        if time.monotonic() - entry.cached_at > ttl:
            del self._cache[digest]
            return None
        self._cache.move_to_end(digest)  # least recently used goes first when the cache is full
        return entry

    async def _load(self, digest: str, request_id: str | None) -> CachedKey:
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[CachedKey] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            entry = await self._ask_auth(digest, request_id)
            self._store(digest, entry)
            future.set_result(entry)
            return entry
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[digest]

    async def _ask_auth(self, digest: str, request_id: str | None) -> CachedKey:
        url = self.settings.auth_url + "/internal/keys/verify"
        try:
            async with self.session.post(
                url, data=orjson.dumps({"keyHash": digest}), headers=service_headers(self.settings, request_id)
            ) as response:
                body: dict[str, Any] = orjson.loads(await response.read())
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise UpstreamUnavailableError("auth") from exc
        now = time.monotonic()
        if status == 200:
            data = body["data"]
            expires = data.get("expiresAt")
            principal = Principal(
                user_id=data["userId"],
                auth_method="api_key",
                scopes=tuple(data["scopes"]),
                is_operator=False,  # operator powers need the operator's own access token
                key_id=data["keyId"],
            )
            return CachedKey(now, principal, datetime.fromisoformat(expires).timestamp() if expires else None)
        if status == 401 and body.get("errorCode") in REFUSALS:
            return CachedKey(now, refusal=body["errorCode"])
        raise UpstreamUnavailableError("auth")

    def _store(self, digest: str, entry: CachedKey) -> None:
        if entry.principal is not None and (
            digest in self._revoked_digests or entry.principal.key_id in self._revoked_key_ids
        ):
            entry = CachedKey(entry.cached_at, refusal="API_KEY_REVOKED")
        self._cache[digest] = entry
        self._cache.move_to_end(digest)
        while len(self._cache) > self.settings.api_key_cache_max_entries:
            self._cache.popitem(last=False)

    def revoked(self, digest: str | None, key_id: str) -> None:
        """An ``apikey.revoked`` event: answer API_KEY_REVOKED from now on, without asking auth."""
        for seen, value in ((self._revoked_key_ids, key_id), (self._revoked_digests, digest)):
            if value:
                seen[value] = None
                while len(seen) > self.settings.api_key_cache_max_entries:
                    seen.popitem(last=False)
        if digest:
            self._cache[digest] = CachedKey(time.monotonic(), refusal="API_KEY_REVOKED")
        for cached_digest, entry in list(self._cache.items()):
            if entry.principal is not None and entry.principal.key_id == key_id:
                self._cache[cached_digest] = CachedKey(time.monotonic(), refusal="API_KEY_REVOKED")

    def drop_user(self, user_id: str) -> None:
        for digest, entry in list(self._cache.items()):
            if entry.principal is not None and entry.principal.user_id == user_id:
                self._cache[digest] = CachedKey(time.monotonic(), refusal="INVALID_API_KEY")


class KeyUsageRecorder:
    """``lastUsedAt`` without a write per request: remember the latest use per key, flush in batches."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        self._pending: dict[str, float] = {}

    def touch(self, key_id: str | None) -> None:
        if key_id:
            self._pending[key_id] = time.time()

    async def flush(self) -> int:
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        usage = {k: datetime.fromtimestamp(v, UTC).isoformat() for k, v in batch.items()}
        try:
            async with self.session.post(
                self.settings.auth_url + "/internal/keys/usage",
                data=orjson.dumps({"usage": usage}),
                headers=service_headers(self.settings),
            ) as response:
                response.raise_for_status()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("key_usage_flush_failed", error=type(exc).__name__, keys=len(batch))
            for key_id, at in batch.items():  # keep them for the next flush, newest wins
                self._pending[key_id] = max(at, self._pending.get(key_id, 0.0))
            return 0
        return len(batch)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.key_usage_flush_seconds)
            await self.flush()
