"""Forwarding: one pooled HTTP client, streamed bodies, hop-by-hop and internal headers dropped, identity added."""

from __future__ import annotations

import httpx
import structlog
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from services.gateway.config import Settings
from services.gateway.errors import UpstreamUnavailableError
from services.gateway.platform import PluginIdentity, detect_plugin
from shared.identity import IDENTITY_HEADER, Identity, is_internal_header, sign_identity

log = structlog.stdlib.get_logger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
BUFFER_LIMIT = 256 * 1024


def make_client(settings: Settings) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=settings.upstream_max_connections,
        keepalive_expiry=30,
    )
    timeout = httpx.Timeout(settings.upstream_timeout_seconds, connect=settings.upstream_connect_timeout_seconds)
    return httpx.AsyncClient(limits=limits, timeout=timeout, follow_redirects=False, trust_env=False)


def upstream_headers(request: Request, identity_token: str, request_id: str) -> list[tuple[str, str]]:
    """Client headers minus hop-by-hop and anything internal-looking, plus the gateway's own."""
    headers = [
        (name, value)
        for name, value in request.headers.items()
        if name not in HOP_BY_HOP and name != "x-request-id" and not is_internal_header(name)
    ]
    client_ip = request.client.host if request.client else ""
    headers.append((IDENTITY_HEADER, identity_token))
    headers.append(("x-request-id", request_id))
    headers.append(("x-forwarded-for", client_ip))
    headers.append(("x-forwarded-proto", request.url.scheme))
    return headers


def build_identity(request: Request, plugin: PluginIdentity, request_id: str) -> Identity:
    """The caller as established at the gateway (authentication joins with the identity issue)."""
    return Identity(
        platform=plugin.platform,
        plugin_version=plugin.version,
        user_agent=request.headers.get("user-agent"),
        request_id=request_id,
    )


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return bool(request.headers.get("transfer-encoding")) or (length is not None and length != "0")


async def forward(
    request: Request, client: httpx.AsyncClient, base_url: str, settings: Settings, service: str
) -> Response:
    request_id: str = request.scope["state"]["request_id"]
    plugin = detect_plugin(request.headers)
    token = sign_identity(
        build_identity(request, plugin, request_id),
        settings.internal_identity_secret,
        settings.internal_identity_ttl_seconds,
    )
    url = base_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    upstream_request = client.build_request(
        request.method,
        url,
        headers=upstream_headers(request, token, request_id),
        content=request.stream() if _has_body(request) else None,
    )
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.TimeoutException as exc:
        log.warning("upstream_timeout", service=service)
        raise UpstreamUnavailableError(service) from exc
    except httpx.TransportError as exc:
        log.warning("upstream_unreachable", service=service, error=type(exc).__name__)
        raise UpstreamUnavailableError(service) from exc
    response_headers = [(k, v) for k, v in upstream.headers.multi_items() if k.lower() not in HOP_BY_HOP]
    length = upstream.headers.get("content-length")
    if length is not None and int(length) <= BUFFER_LIMIT:
        try:
            body = await upstream.aread()
        finally:
            await upstream.aclose()
        response = Response(body, status_code=upstream.status_code)
        response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response_headers]
        response.raw_headers.append((b"content-length", str(len(body)).encode()))
        return response
    streaming = StreamingResponse(
        upstream.aiter_raw(), status_code=upstream.status_code, background=BackgroundTask(upstream.aclose)
    )
    streaming.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response_headers]
    return streaming
