"""A hostile HTTP/1.1 client on raw sockets, for the abuse tests and the flood benchmark.

HTTP libraries are built to behave; an attacker is not. These send a request head and then a body a byte at a time
(``trickle``) or as fast as the server takes it (``flood``), chunked or not, and read what the server answered and
whether it closed the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


def address_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: platform", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class RawAnswer:
    status: int | None  # None: the server never answered
    closed: bool  # the server closed the connection after answering
    body: bytes


async def read_answer(reader: asyncio.StreamReader, first: bytes) -> RawAnswer:
    data = first
    closed = False
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            more = await asyncio.wait_for(reader.read(65536), timeout=deadline - time.monotonic())
        except TimeoutError:
            break
        except ConnectionError:  # reset: what the client had still in flight met a closed socket
            closed = True
            break
        if not more:
            closed = True
            break
        data += more
        if b"\r\n\r\n" in data and b"connection: close" not in data.lower():
            break  # a keep-alive answer: the connection is not expected to close
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    return RawAnswer(status, closed, data.partition(b"\r\n\r\n")[2])


async def trickle(
    address: tuple[str, int], head: bytes, *, chunked: bool, period: float = 0.5, give_up_after: float = 30.0
) -> RawAnswer:
    """Send ``head``, then one byte of body every ``period`` seconds until the server answers."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(head)
        await writer.drain()
        first = asyncio.ensure_future(reader.read(65536))
        deadline = time.monotonic() + give_up_after
        while time.monotonic() < deadline:
            done, _ = await asyncio.wait({first}, timeout=period)
            if done:
                return await read_answer(reader, first.result())
            try:
                writer.write(b"1\r\nx\r\n" if chunked else b"x")
                await writer.drain()
            except ConnectionError:
                return await read_answer(reader, await first)
        first.cancel()
        return RawAnswer(None, False, b"")
    finally:
        writer.close()


async def flood(
    address: tuple[str, int], size: int, head: bytes, *, chunked: bool, chunk: int = 64 * 1024
) -> tuple[RawAnswer, int]:
    """Send ``size`` bytes of body as fast as the server takes them; returns its answer and the bytes it took."""
    reader, writer = await asyncio.open_connection(*address)
    sent = 0
    try:
        writer.write(head)  # buffered: a refused body shows in the answer, not here
        first = asyncio.ensure_future(reader.read(65536))
        block = b"x" * chunk
        while sent < size and not first.done():
            piece = (f"{len(block):x}\r\n".encode() + block + b"\r\n") if chunked else block
            try:
                writer.write(piece)
                await asyncio.wait_for(writer.drain(), timeout=10)
            except (ConnectionError, TimeoutError):
                break
            sent += len(block)
        if chunked and sent >= size and not first.done():
            with contextlib.suppress(ConnectionError):
                writer.write(b"0\r\n\r\n")
        try:
            answer = await read_answer(reader, await asyncio.wait_for(first, timeout=30))
        except ConnectionError:  # reset before its answer could be read: no answer at all
            answer = RawAnswer(None, True, b"")
        return answer, sent
    finally:
        writer.close()
