"""Service-to-service HTTP: a pooled client that signs a ``service`` identity on every call.

Used for the few synchronous calls the architecture allows (auth -> credits grant at signup, renders -> credits
reserve at create, gateway -> auth key verification). The request id of the current log context is propagated.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
import structlog
from pydantic import BaseModel

from shared.errors import DomainError, ServiceUnavailableError
from shared.identity import IDENTITY_HEADER, Identity, sign_identity


class InternalClient:
    def __init__(
        self,
        base_url: str,
        *,
        caller: str,
        secret: str,
        timeout: float = 5.0,
        passthrough: frozenset[int] = frozenset({402, 404, 409}),
    ) -> None:
        """``passthrough``: statuses whose contract error is relayed to the caller as is (e.g. 402 credits)."""
        self.passthrough = passthrough
        self.caller = caller
        self.secret = secret
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
            trust_env=False,
        )

    def _headers(self, user_id: str | None) -> dict[str, str]:
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        identity = Identity(auth_method="service", service=self.caller, user_id=user_id, request_id=request_id)
        headers = {IDENTITY_HEADER: sign_identity(identity, self.secret)}
        if request_id:
            headers["x-request-id"] = str(request_id)
        return headers

    async def request(
        self, method: str, path: str, *, user_id: str | None = None, json: Any = None, params: Any = None
    ) -> Any:
        """The ``data`` of a successful answer; a contract error is re-raised as the same ``DomainError``."""
        try:
            response = await self.http.request(method, path, json=json, params=params, headers=self._headers(user_id))
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

    def __init__(self, base_url: str, *, caller: str, secret: str, timeout: float = 5.0) -> None:
        self._client = InternalClient(base_url, caller=caller, secret=secret, timeout=timeout)

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
