"""The gateway's request pipeline for routed paths: identify, authorize, rate-limit, forward.

It runs as plain ASGI in front of FastAPI (see ``main.GatewayApp``): the hot path pays for no routing tables or
dependency injection, only for what it must do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
import structlog
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from services.gateway.authn import ApiKeyVerifier, JwtVerifier, Principal
from services.gateway.bodies import BodyPolicy, receive_body, too_large
from services.gateway.config import Settings
from services.gateway.errors import (
    AuthRequiredError,
    ClientGoneError,
    InsufficientPermissionsError,
    InvalidTokenError,
    RateLimitedError,
)
from services.gateway.isolation import OpenSlots
from services.gateway.platform import PluginIdentity, detect_plugin
from services.gateway.proxy import Upstreams, forward, upstream_headers
from services.gateway.ratelimit import Decision, RateLimiter, account_of
from services.gateway.routing import AUTH_ENTRY_PATHS, Access, Policy, is_event_stream, policy_for
from services.gateway.signer import IdentitySigner
from shared.errors import DomainError, error_body
from shared.http import refuse_unread_body
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


@dataclass(frozen=True, slots=True)
class Admission:
    """What ``handle`` established about a request, handed on rather than worked out again."""

    principal: Principal | None
    policy: Policy
    body_policy: BodyPolicy
    declared: int | None
    headers: Headers
    client_ip: str


@dataclass
class Pipeline:
    settings: Settings
    upstreams: Upstreams
    jwt: JwtVerifier
    keys: ApiKeyVerifier
    limiter: RateLimiter
    signer: IdentitySigner
    failures: FailureBudget
    requests: OpenSlots
    streams: OpenSlots

    async def handle(self, scope: Scope, receive: Receive, send: Send, service: str) -> None:
        request_id: str = scope["state"]["request_id"]
        headers = Headers(scope=scope)
        plugin = detect_plugin(headers)
        scope["state"]["plugin"] = plugin
        extra: list[tuple[bytes, bytes]] = []
        try:
            if _has_nul(scope):
                raise DomainError("NUL characters are not allowed in URLs", details={"field": "url", "reason": "NUL"})
            body_policy = self._body_policy(scope)
            declared = _declared_length(headers)
            if declared is not None and declared > body_policy.limit:  # refused before a byte of it is read
                raise too_large(body_policy.limit)
            policy = policy_for(scope["method"], scope["path"])
            client_ip = scope["client"][0] if scope.get("client") else ""
            blocked_for = self.failures.retry_after(client_ip)
            if blocked_for is not None:
                raise RateLimitedError("Too many failed authentications; retry later", retry_after=blocked_for)
            try:
                principal = await self.authenticate(headers, policy, request_id)
            except DomainError as exc:
                if exc.status_code == 401:
                    self.failures.record(client_ip)
                raise
            if principal is not None:
                scope["state"]["user_id"] = principal.user_id
            authorize(principal, policy)
            caller = principal.user_id if principal is not None else "ip:" + client_ip
            slots = self.streams if is_event_stream(scope["method"], scope["path"]) else self.requests
            with slots.hold(caller):
                await self._admit_and_forward(
                    scope,
                    receive,
                    send,
                    service,
                    Admission(principal, policy, body_policy, declared, headers, client_ip),
                    extra,
                )
        except ClientGoneError:
            log.info("client_gone_before_body", service=service)
        except DomainError as exc:
            await send_error(send, exc, extra, receive)
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

    async def _admit_and_forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service: str,
        admit: Admission,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        """Rate-limit, receive the whole body, forward. A request is limited before its body is read, except the
        sign-in family: its limit is per account, which only its (small) body names."""
        principal, policy = admit.principal, admit.policy
        credentials = policy.access is Access.CREDENTIALS
        if not credentials:
            await self._admit(scope, principal, policy, None, extra)
        has_body = _has_body(scope, admit.declared)
        body = await receive_body(receive, admit.body_policy, admit.declared) if has_body else None
        try:
            if credentials:
                await self._admit(scope, principal, policy, body.as_bytes() if body is not None else b"", extra)
            token = self.signer.token(build_identity(principal, scope["state"]["plugin"], admit.headers))
            # The raw path and query, byte for byte: an upstream must see exactly what the client sent.
            raw_path = scope.get("raw_path") or scope["path"].encode()
            url = self.upstreams.base_urls[service] + raw_path.decode("latin-1")
            if scope.get("query_string"):
                url += "?" + scope["query_string"].decode("latin-1")
            request_id = scope["state"]["request_id"]
            out_headers = upstream_headers(scope["headers"], token, request_id, admit.client_ip, scope["scheme"])
            await forward(
                self.upstreams.session(service),
                scope,
                receive,
                send,
                url=url,
                headers=out_headers,
                body=body,
                service=service,
                extra_headers=extra,
            )
        finally:
            if body is not None:
                body.close()

    async def _admit(
        self,
        scope: Scope,
        principal: Principal | None,
        policy: Policy,
        body: bytes | None,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        """Apply the rate limit: its headers go into ``extra``; a refusal raises 429."""
        decision = await self._rate_limit(scope, principal, policy, body)
        if decision is not None:
            extra[:] = decision.headers()
            if not decision.allowed:
                raise RateLimitedError("Too many requests; retry later", retry_after=decision.retry_after)

    def __post_init__(self) -> None:
        def policy(limit: int) -> BodyPolicy:
            s = self.settings
            return BodyPolicy(limit, s.body_min_bytes_per_second, s.body_grace_seconds, s.body_timeout_seconds)

        self._uploads = policy(self.settings.max_render_body_bytes)
        self._sign_in = policy(self.settings.max_auth_body_bytes)
        self._bodies = policy(self.settings.max_body_bytes)

    def _body_policy(self, scope: Scope) -> BodyPolicy:
        """Render uploads, the sign-in family and every other body each have their own cap; one pace for all."""
        path = scope["path"]
        if scope["method"] == "POST" and path == "/api/plugins/renders":
            return self._uploads
        return self._sign_in if path in AUTH_ENTRY_PATHS else self._bodies

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
        if not per_ip.allowed:
            return per_ip
        return await self.limiter.check(
            "auth", f"{client_ip}:{account_of(body)}", self.settings.auth_rate_limit_per_minute
        )


def _has_nul(scope: Scope) -> bool:
    """A NUL in a URL is never meaningful and PostgreSQL cannot store it: refuse it at the door."""
    raw = scope.get("raw_path") or b""
    return "\x00" in scope["path"] or b"%00" in raw or b"%00" in scope.get("query_string", b"")


def _declared_length(headers: Headers) -> int | None:
    declared = headers.get("content-length")
    if declared is None or not (declared.isascii() and declared.isdigit()):
        return None
    return int(declared)


def _has_body(scope: Scope, declared: int | None) -> bool:
    if declared is not None:
        return declared > 0
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


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


async def send_error(
    send: Send, exc: DomainError, extra: list[tuple[bytes, bytes]], receive: Receive | None = None
) -> None:
    """The envelope; a refusal that leaves a body unread (``Connection: close``) lingers so the client sees it."""
    payload = orjson.dumps(error_body(exc.message, exc.error_code, exc.details, **exc.extra))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    if receive is not None and exc.headers.get("Connection") == "close":
        await refuse_unread_body(receive, send, exc.status_code, headers + extra, payload)
        return
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers + extra})
    await send({"type": "http.response.body", "body": payload})
