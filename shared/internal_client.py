"""Service-to-service HTTP: a pooled client that sends the caller's own service credential on every call.

Used for the few synchronous calls the architecture allows (auth -> credits grant at signup, renders -> credits
reserve and release at create, credits' reconciler -> renders' render status). The credential names the caller and
the callee and nothing else: a user the call is about goes in its path or body. The request id of the current log
context is propagated.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
import structlog
from pydantic import BaseModel

from shared.errors import DomainError, ServiceUnavailableError
from shared.identity import SERVICE_HEADER, sign_service_token
from shared.settings import ServiceSettings


class InternalClient:
    def __init__(
        self,
        base_url: str,
        *,
        caller: str,
        callee: str,
        settings: ServiceSettings,
        timeout: float = 5.0,
        passthrough: frozenset[int] = frozenset({402, 404, 409}),
    ) -> None:
        """``caller`` signs with its own key (``SERVICE_IDENTITY_KEY``; raises at once when it has none outside
        dev); ``passthrough``: statuses whose contract error is relayed to the caller as is (e.g. 402 credits)."""
        self.passthrough = passthrough
        self.caller = caller
        self.callee = callee
        self._key = settings.service_private_key(caller)
        self._ttl = settings.internal_identity_ttl_seconds
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
            trust_env=False,
        )

    def _headers(self) -> dict[str, str]:
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        headers = {SERVICE_HEADER: sign_service_token(self.caller, self.callee, self._key, self._ttl)}
        if request_id:
            headers["x-request-id"] = str(request_id)
        return headers

    async def request(self, method: str, path: str, *, json: Any = None, params: Any = None) -> Any:
        """The ``data`` of a successful answer; a contract error is re-raised as the same ``DomainError``."""
        try:
            response = await self.http.request(method, path, json=json, params=params, headers=self._headers())
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(
                "A platform service is temporarily unavailable", details={"service": str(self.http.base_url)}
            ) from exc
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        if response.status_code >= 400 and response.status_code not in self.passthrough:
            # Another service's refusal (its auth, its validation) is our fault, not the caller's: never leak it.
            # Only its own 5xx may pass with time; retrying a refusal would never end.
            refused = ServiceUnavailableError(
                "A platform service refused an internal request", details={"status": response.status_code}
            )
            refused.transient = response.status_code >= 500
            raise refused
        if response.status_code >= 400:
            known = {"success", "error", "errorCode", "details"}
            raise DomainError(
                body.get("error", "upstream error"),
                status_code=response.status_code,
                error_code=body.get("errorCode", "INTERNAL_ERROR"),
                details=body.get("details") or {},
                extra={k: v for k, v in body.items() if k not in known},
            )
        return body.get("data", body)

    async def aclose(self) -> None:
        await self.http.aclose()


RenderStatusName = Literal["pending", "processing", "completed", "failed", "canceled"]
RENDER_NOT_FOUND = "RENDER_NOT_FOUND"
"""The error code renders answers for a render that does not exist: only this, never any 404, means "none"."""


class RenderState(BaseModel):
    renderId: str
    status: RenderStatusName


class RendersClient:
    """Renders' internal API, typed: what credits' reconciler asks about a render it holds credits for."""

    def __init__(self, base_url: str, *, caller: str, settings: ServiceSettings, timeout: float = 5.0) -> None:
        self._client = InternalClient(base_url, caller=caller, callee="renders", settings=settings, timeout=timeout)

    async def render_state(self, render_id: str) -> RenderState | None:
        """The render's status, or None when renders says it does not exist; anything else raises."""
        try:
            data = await self._client.request("GET", f"/internal/renders/{render_id}")
        except DomainError as exc:
            if exc.error_code == RENDER_NOT_FOUND:
                return None
            raise
        return RenderState.model_validate(data)

    async def aclose(self) -> None:
        await self._client.aclose()
