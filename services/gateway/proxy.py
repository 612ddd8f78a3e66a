"""Forwarding over one pooled aiohttp session: bodies streamed both ways, hop-by-hop and internal headers dropped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import structlog
from starlette.types import Receive, Scope, Send
from yarl import URL

from services.gateway.config import Settings
from services.gateway.errors import UpstreamUnavailableError
from shared.identity import IDENTITY_HEADER, is_internal_header

log = structlog.stdlib.get_logger(__name__)

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)
BUFFER_LIMIT = 256 * 1024


def make_session(settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_max_connections, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300
    )
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.upstream_pool_wait_seconds,  # waiting for a pooled connection is bounded too
        sock_connect=settings.upstream_connect_timeout_seconds,
        sock_read=settings.upstream_timeout_seconds,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        trust_env=False,
    )


def upstream_headers(
    raw_headers: list[tuple[bytes, bytes]],
    identity_token: str,
    request_id: str,
    client_ip: str,
    scheme: str,
    keep_length: bool,
) -> dict[str, str]:
    """Client headers minus hop-by-hop and anything internal-looking, plus the gateway's own."""
    headers: dict[str, str] = {}
    connection_tokens: set[bytes] = set()
    for name, value in raw_headers:
        if name == b"connection":
            connection_tokens.update(t.strip().lower() for t in value.split(b","))
    for name, value in raw_headers:
        if name in HOP_BY_HOP or name in connection_tokens or name == b"x-request-id":
            continue
        if name == b"content-length" and not keep_length:
            continue
        text_name = name.decode("latin-1")
        if is_internal_header(text_name):
            continue
        value_text = value.decode("latin-1")
        headers[text_name] = f"{headers[text_name]}, {value_text}" if text_name in headers else value_text
    headers[IDENTITY_HEADER] = identity_token
    headers["x-request-id"] = request_id
    headers["x-forwarded-for"] = client_ip
    headers["x-forwarded-proto"] = scheme
    return headers


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


def _response_headers(
    raw: tuple[tuple[bytes, bytes], ...], extra: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    headers = [(k.lower(), v) for k, v in raw if k.lower() not in HOP_BY_HOP]
    return headers + extra


async def forward(
    session: aiohttp.ClientSession,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    url: str,
    headers: dict[str, str],
    body: bytes | None,
    service: str,
    extra_headers: list[tuple[bytes, bytes]],
) -> int:
    """Send the request upstream and relay the answer; returns the status sent to the client."""
    data: bytes | AsyncIterator[bytes] | None = body
    if body is None and _has_body(scope):
        data = _request_body(receive)
    try:
        async with session.request(
            scope["method"], URL(url, encoded=True), headers=headers, data=data, allow_redirects=False
        ) as upstream:
            response_headers = _response_headers(upstream.raw_headers, extra_headers)
            length = upstream.content_length
            if length is not None and length <= BUFFER_LIMIT:
                payload = await upstream.read()
                await send({"type": "http.response.start", "status": upstream.status, "headers": response_headers})
                await send({"type": "http.response.body", "body": payload})
                return upstream.status
            await send({"type": "http.response.start", "status": upstream.status, "headers": response_headers})
            try:
                async for chunk in upstream.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Headers are out: the only honest signal left is to cut the stream short.
                log.warning("upstream_stream_broken", service=service, error=type(exc).__name__)
            await send({"type": "http.response.body", "body": b""})
            return upstream.status
    except (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError, TimeoutError) as exc:
        log.warning("upstream_unavailable", service=service, error=type(exc).__name__)
        raise UpstreamUnavailableError(service) from exc


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False
