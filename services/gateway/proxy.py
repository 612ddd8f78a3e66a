"""Forwarding over one pooled session per service: hop-by-hop and internal headers dropped, answers streamed back.

Each service behind the gateway has its own connection pool, so a service that is slow (or a flood aimed at it)
exhausts only its own pool: callers of the others never wait for a connection it holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import structlog
from starlette.types import Receive, Scope, Send
from yarl import URL

from services.gateway.bodies import ReceivedBody
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


def make_session(max_connections: int, settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300)
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


class Upstreams:
    """One pool per service for proxied requests, and one for the gateway's own calls (API key verification,
    JWKS, health checks, OpenAPI documents), so no flood of proxied requests can starve those."""

    def __init__(self, settings: Settings) -> None:
        self.base_urls = settings.upstreams()
        self._sessions = {
            name: make_session(settings.upstream_max_connections_per_service, settings) for name in settings.upstreams()
        }
        self.internal = make_session(settings.internal_max_connections, settings)

    def session(self, service: str) -> aiohttp.ClientSession:
        return self._sessions[service]

    async def close(self) -> None:
        for session in (*self._sessions.values(), self.internal):
            await session.close()


def upstream_headers(
    raw_headers: list[tuple[bytes, bytes]],
    identity_token: str,
    request_id: str,
    client_ip: str,
    scheme: str,
) -> dict[str, str]:
    """Client headers minus hop-by-hop and anything internal-looking, plus the gateway's own."""
    headers: dict[str, str] = {}
    connection_tokens: set[bytes] = set()
    for name, value in raw_headers:
        if name == b"connection":
            connection_tokens.update(t.strip().lower() for t in value.split(b","))
    for name, value in raw_headers:
        # The length is the gateway's to state: the body is forwarded whole, however the client framed it.
        if name in HOP_BY_HOP or name in connection_tokens or name in (b"x-request-id", b"content-length"):
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
    body: ReceivedBody | None,
    service: str,
    extra_headers: list[tuple[bytes, bytes]],
) -> int:
    """Send the request (its body already received whole) upstream and relay the answer; returns the status.

    ``receive`` is only watched for the client leaving: the body was read before, so nothing else can arrive.
    """
    data: bytes | AsyncIterator[bytes] | None = None
    if body is not None:
        data = body.as_bytes() if body.in_memory else body.stream()
        headers["content-length"] = str(body.size)
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
            if await _relay_until_client_leaves(upstream, receive, send, service):
                await send({"type": "http.response.body", "body": b""})
            return upstream.status
    except (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError, TimeoutError) as exc:
        log.warning("upstream_unavailable", service=service, error=type(exc).__name__)
        raise UpstreamUnavailableError(service) from exc


async def _relay_until_client_leaves(
    upstream: aiohttp.ClientResponse, receive: Receive, send: Send, service: str
) -> bool:
    """Relay a streamed answer (an event stream can last minutes) until it ends or the client disconnects; True if
    it ended. A client that leaves is noticed at once, so its upstream connection and its stream slot are freed
    then, not whenever the upstream next writes."""

    async def relay() -> None:
        try:
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Headers are out: the only honest signal left is to cut the stream short.
            log.warning("upstream_stream_broken", service=service, error=type(exc).__name__)

    async def client_left() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    relaying, leaving = asyncio.ensure_future(relay()), asyncio.ensure_future(client_left())
    try:
        done, _ = await asyncio.wait({relaying, leaving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (relaying, leaving):
            task.cancel()
        await asyncio.gather(relaying, leaving, return_exceptions=True)
    return relaying in done
