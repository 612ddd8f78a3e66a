"""The dispatcher's one pooled HTTP client, with the SSRF guard on the address it actually connects to.

Every attempt checks the URL statically (scheme, literal addresses); a hostname goes through ``GuardedResolver``,
which refuses the whole name if any of its addresses is refused. The connector connects to the addresses the
resolver returned, so what was checked is what is connected to: no window for DNS rebinding between the check and
the connection. Redirects are never followed; the receiver's answer is the attempt's outcome.

An outcome's ``error`` is shown to the endpoint's owner in the delivery log, so it never names an address the URL's
host resolved to (internal names must not be mapped through webhooks): refusals say which kind of network, network
errors say what went wrong by their errno, and any other message has its addresses redacted.
"""

from __future__ import annotations

import os
import socket
import time

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from services.webhooks.policy import Outcome, parse_retry_after
from shared.netguard import UnsafeUrlError, check_address, check_url, redact_addresses


class UnsafeAddressError(OSError):
    """A hostname resolved to an address the platform must not connect to."""


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and refuses names with any address the SSRF policy forbids."""

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self.allow_private = allow_private
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        for result in results:
            try:
                check_address(result["host"], allow_private=self.allow_private)
            except UnsafeUrlError as exc:
                raise UnsafeAddressError(f"{host} resolves to a refused address: {exc}") from None
        return results

    async def close(self) -> None:
        await self.inner.close()


class Transport:
    """POSTs signed bodies; never raises for what a receiver or the network does (that is the ``Outcome``)."""

    def __init__(
        self,
        *,
        timeout_seconds: float,
        allow_private: bool,
        response_body_bytes: int = 1024,
        max_connections: int = 512,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.allow_private = allow_private
        self.response_body_bytes = response_body_bytes
        self.max_connections = max_connections
        self.resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        resolver = GuardedResolver(allow_private=self.allow_private, inner=self.resolver)
        connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, resolver=resolver)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
            trust_env=False,  # never route user URLs through a proxy from the environment
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, url: str, payload: bytes, headers: dict[str, str]) -> Outcome:
        assert self._session is not None, "Transport.start() first"
        started = time.perf_counter()
        try:
            check_url(url, allow_private=self.allow_private)
            async with self._session.post(url, data=payload, headers=headers, allow_redirects=False) as response:
                raw = await _read_prefix(response.content, self.response_body_bytes)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                return Outcome(
                    status_code=response.status,
                    error=None,
                    duration_ms=_elapsed_ms(started),
                    response_body=_text(raw),
                    retry_after=retry_after,
                )
        except UnsafeUrlError as exc:
            return Outcome(None, f"refused: {exc}", _elapsed_ms(started))
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, UnsafeAddressError):
                return Outcome(None, f"refused: {exc.os_error}", _elapsed_ms(started))
            return Outcome(None, f"connection failed: {_os_reason(exc.os_error)}", _elapsed_ms(started))
        except TimeoutError:
            return Outcome(None, f"no answer within {self.timeout_seconds:g} s", _elapsed_ms(started))
        except aiohttp.ClientError as exc:
            return Outcome(None, redact_addresses(f"{type(exc).__name__}: {exc}")[:500], _elapsed_ms(started))


async def _read_prefix(content: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to ``limit`` bytes of a body that may arrive in small chunks; the rest is never read."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _os_reason(error: OSError) -> str:
    """What went wrong, by errno: asyncio's own text names the address it tried ("Connect call failed (...)")."""
    if isinstance(error, socket.gaierror) and error.strerror:
        return error.strerror  # the resolver's message ("Name or service not known"): no address in it
    if error.errno and error.errno > 0:
        return os.strerror(error.errno)
    return redact_addresses(str(error) or type(error).__name__)[:300]


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _text(raw: bytes) -> str | None:
    """The kept part of a response body as text PostgreSQL can store (no NUL characters)."""
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd") if raw else None
