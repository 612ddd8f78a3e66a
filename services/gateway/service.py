"""The gateway's request pipeline for routed paths: identify, authorize, rate-limit, forward.

It runs as plain ASGI in front of FastAPI (see ``main.GatewayApp``): the hot path pays for no routing tables or
dependency injection, only for what it must do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp
import orjson
import structlog
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from services.gateway.authn import ApiKeyVerifier, JwtVerifier, Principal
from services.gateway.config import Settings
from services.gateway.errors import (
    AuthRequiredError,
    InsufficientPermissionsError,
    InvalidTokenError,
    PayloadTooLargeError,
    RateLimitedError,
)
from services.gateway.platform import PluginIdentity, detect_plugin
from services.gateway.proxy import forward, upstream_headers
from services.gateway.ratelimit import Decision, RateLimiter, account_of
from services.gateway.routing import Access, Policy, policy_for
from services.gateway.signer import IdentitySigner
from shared.errors import DomainError, error_body
from shared.identity import Identity

log = structlog.stdlib.get_logger(__name__)


class FailureBudget:
    """Failed authentications per client IP on this replica: past the budget, credentials are not even checked.

    Random well-formed API keys pass the checksum and would each cost auth a database lookup; this caps what one
    address can make the platform do. In memory (no Redis round trip on the hot path), so per replica.
    """

    MAX_TRACKED = 100_000

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._windows: dict[str, tuple[int, int]] = {}

    def retry_after(self, ip: str) -> int | None:
        window, count = self._windows.get(ip, (0, 0))
        now = int(time.time())
        if window == now // 60 and count >= self.per_minute:
            return 60 - now % 60
        return None

    def record(self, ip: str) -> None:
        minute = int(time.time()) // 60
        window, count = self._windows.get(ip, (minute, 0))
        if len(self._windows) >= self.MAX_TRACKED:
            self._windows.clear()
        self._windows[ip] = (minute, count + 1 if window == minute else 1)


@dataclass
class Pipeline:
    settings: Settings
    session: aiohttp.ClientSession
    jwt: JwtVerifier
    keys: ApiKeyVerifier
    limiter: RateLimiter
    signer: IdentitySigner
    failures: FailureBudget

    async def handle(self, scope: Scope, receive: Receive, send: Send, service: str) -> None:
        request_id: str = scope["state"]["request_id"]
        headers = Headers(scope=scope)
        plugin = detect_plugin(headers)
        scope["state"]["plugin"] = plugin
        extra: list[tuple[bytes, bytes]] = []
        try:
            if (
                "\x00" in scope["path"]
                or b"%00" in scope.get("query_string", b"")
                or b"%00" in scope.get("raw_path", b"")
            ):
                raise DomainError("NUL characters are not allowed in URLs", details={"field": "url", "reason": "NUL"})
            self._check_declared_length(scope, headers)
            policy = policy_for(scope["method"], scope["path"])
            client_ip = scope["client"][0] if scope.get("client") else ""
            blocked_for = self.failures.retry_after(client_ip)
            if blocked_for is not None:
                raise RateLimitedError(
                    "Too many failed authentications; retry later",
                    details={"retryAfter": blocked_for},
                    headers={"Retry-After": str(blocked_for)},
                )
            try:
                principal = await self.authenticate(headers, policy, request_id)
            except DomainError as exc:
                if exc.status_code == 401:
                    self.failures.record(client_ip)
                raise
            if principal is not None:
                scope["state"]["user_id"] = principal.user_id
            authorize(principal, policy)
            body = await self._read_small_body(receive, headers) if policy.access is Access.CREDENTIALS else None
            decision = await self._rate_limit(scope, principal, policy, body)
            if decision is not None:
                extra = decision.headers()
                if not decision.allowed:
                    raise RateLimitedError(
                        "Too many requests; retry later",
                        details={"retryAfter": decision.retry_after},
                        headers={"Retry-After": str(decision.retry_after)},
                    )
            token = self.signer.token(build_identity(principal, plugin, headers))
            # The raw path and query, byte for byte: an upstream must see exactly what the client sent.
            raw_path = scope.get("raw_path") or scope["path"].encode()
            url = self.settings.upstreams()[service] + raw_path.decode("latin-1")
            if scope.get("query_string"):
                url += "?" + scope["query_string"].decode("latin-1")
            out_headers = upstream_headers(
                scope["headers"], token, request_id, client_ip, scope["scheme"], keep_length=body is None
            )
            await forward(
                self.session,
                scope,
                receive,
                send,
                url=url,
                headers=out_headers,
                body=body,
                service=service,
                extra_headers=extra,
            )
        except DomainError as exc:
            await send_error(send, exc, extra)
        except Exception as exc:
            # The envelope, never a bare 500 (if the upstream's headers are already out, the stream just ends).
            log.error("gateway_unhandled_exception", error_type=type(exc).__name__, service=service, exc_info=exc)
            await send_error(
                send,
                DomainError(
                    "Internal error", status_code=500, error_code="INTERNAL_ERROR", details={"requestId": request_id}
                ),
                extra,
            )

    def _check_declared_length(self, scope: Scope, headers: Headers) -> None:
        """Refuse an oversized body before reading a byte of it (services also count what actually arrives)."""
        declared = headers.get("content-length")
        if declared is None or not (declared.isascii() and declared.isdigit()):
            return
        upload = scope["method"] == "POST" and scope["path"] == "/api/plugins/renders"
        limit = self.settings.max_render_body_bytes if upload else self.settings.max_body_bytes
        if int(declared) > limit:
            raise PayloadTooLargeError(f"Request body over {limit} bytes", details={"limit": limit})

    async def authenticate(self, headers: Headers, policy: Policy, request_id: str) -> Principal | None:
        """API.md: an ``Authorization`` header alone decides; else ``X-Api-Key``; else anonymous."""
        if policy.access in (Access.PUBLIC, Access.CREDENTIALS):
            return None
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise InvalidTokenError()
            return await self.jwt.verify(token.strip())
        api_key = headers.get("x-api-key")
        if api_key is not None:
            return await self.keys.verify(api_key.strip(), request_id)
        raise AuthRequiredError()

    async def _read_small_body(self, receive: Receive, headers: Headers) -> bytes:
        """Sign-in family bodies are tiny; read them here (bounded) to rate-limit per IP + email."""
        limit = self.settings.max_auth_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(f"Request body over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"Request body over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _rate_limit(
        self, scope: Scope, principal: Principal | None, policy: Policy, body: bytes | None
    ) -> Decision | None:
        if principal is not None:
            # Per user, not per key: more keys must not mean more quota.
            return await self.limiter.check("api", principal.user_id, self.settings.rate_limit_per_minute)
        if policy.access is not Access.CREDENTIALS:
            return None
        # Two limits on the sign-in family: per IP + account (email, or the refresh token presented), strict;
        # and per IP over all accounts, looser (many users can share one NAT address).
        client_ip = scope["client"][0] if scope.get("client") else "unknown"
        per_ip = await self.limiter.check("auth-ip", client_ip, self.settings.auth_ip_rate_limit_per_minute)
        if per_ip is not None and not per_ip.allowed:
            return per_ip
        return await self.limiter.check(
            "auth", f"{client_ip}:{account_of(body)}", self.settings.auth_rate_limit_per_minute
        )


def authorize(principal: Principal | None, policy: Policy) -> None:
    if policy.access in (Access.PUBLIC, Access.CREDENTIALS):
        return
    assert principal is not None
    if policy.access is Access.BEARER and principal.auth_method != "bearer":
        raise InsufficientPermissionsError("keys:manage", "API keys cannot manage API keys; use a Bearer access token")
    if policy.access is Access.OPERATOR and not (principal.auth_method == "bearer" and principal.is_operator):
        raise InsufficientPermissionsError("operator", "Operator access token required")
    if policy.access is Access.SCOPE and policy.scope not in principal.scopes:
        raise InsufficientPermissionsError(policy.scope or "")


def build_identity(principal: Principal | None, plugin: PluginIdentity, headers: Headers) -> Identity:
    """Who is calling; the request id travels in ``X-Request-Id``, so equal callers get equal identities."""
    base = Identity(
        platform=plugin.platform,
        plugin_version=plugin.version,
        user_agent=(headers.get("user-agent") or "")[:300] or None,
    )
    if principal is None:
        return base
    return base.model_copy(
        update={
            "user_id": principal.user_id,
            "auth_method": principal.auth_method,
            "key_id": principal.key_id,
            "scopes": list(principal.scopes),
            "is_operator": principal.is_operator,
        }
    )


async def send_error(send: Send, exc: DomainError, extra: list[tuple[bytes, bytes]]) -> None:
    payload = orjson.dumps(error_body(exc.message, exc.error_code, exc.details, **exc.extra))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers + extra})
    await send({"type": "http.response.body", "body": payload})
