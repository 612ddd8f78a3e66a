"""Receiving a request body at the gateway: counted, on a clock, and whole before anything is sent upstream.

Invariants:
- **No byte past the cap is kept.** The limit is checked on the bytes that arrive, chunked or not; ``Content-Length``
  only lets an oversized body be refused before its first byte.
- **A body must keep pace.** After ``grace`` seconds it must have arrived at ``min_rate`` bytes per second on
  average, and all of it within ``deadline`` seconds; a slower one is refused (408) and its connection closed.
- **Store and forward.** A body is received completely before an upstream connection is taken, so a slow client
  holds no upstream connection and no service-side slot (an upload slot of renders, a database session) while its
  bytes trickle in. Small bodies stay in memory; larger ones spill to a temporary file, so memory stays bounded
  whatever the number of uploads in flight.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO

from starlette.types import Receive

from services.gateway.errors import ClientGoneError, PayloadTooLargeError, RequestTimeoutError
from services.gateway.isolation import REFUSED

IN_MEMORY_BYTES = 1024 * 1024
CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class BodyPolicy:
    """How fast and how much: ``limit`` bytes at most, ``min_rate`` bytes/s after ``grace`` s, ``deadline`` s."""

    limit: int
    min_rate: float
    grace: float
    deadline: float

    def due_by(self, started: float, received: int) -> float:
        """The monotonic time by which more bytes must have arrived (the pace rule, then the deadline)."""
        paced = started + self.grace + received / self.min_rate if self.min_rate > 0 else float("inf")
        return min(paced, started + self.deadline)


class ReceivedBody:
    """A whole request body: in memory, or spilled to a temporary file past ``IN_MEMORY_BYTES``."""

    def __init__(self) -> None:
        self.size = 0
        self._chunks: list[bytes] = []
        self._file: IO[bytes] | None = None

    def append(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._file is None and self.size > IN_MEMORY_BYTES:
            self._file = tempfile.TemporaryFile()
            for kept in self._chunks:
                self._file.write(kept)
            self._chunks = []
        if self._file is not None:
            self._file.write(chunk)
        else:
            self._chunks.append(chunk)

    @property
    def in_memory(self) -> bool:
        return self._file is None

    def as_bytes(self) -> bytes:
        assert self._file is None, "a spilled body is streamed, not joined"
        return b"".join(self._chunks)

    async def stream(self) -> AsyncIterator[bytes]:
        """The body again, from the start, in chunks (for a spilled upload)."""
        if self._file is None:
            for chunk in self._chunks:
                yield chunk
            return
        self._file.seek(0)
        while chunk := self._file.read(CHUNK_BYTES):
            yield chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks = []


async def receive_body(receive: Receive, policy: BodyPolicy, declared: int | None) -> ReceivedBody:
    """The whole body, or ``PayloadTooLargeError`` / ``RequestTimeoutError`` / ``ClientGoneError``."""
    if declared is not None and declared > policy.limit:
        raise too_large(policy.limit)
    body = ReceivedBody()
    started = time.monotonic()
    try:
        while True:
            timeout = policy.due_by(started, body.size) - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(timeout, 0.0))
            except TimeoutError:
                REFUSED.labels("body too slow").inc()
                raise RequestTimeoutError(
                    "The request body did not arrive in time",
                    details={"receivedBytes": body.size, "minBytesPerSecond": policy.min_rate},
                ) from None
            if message["type"] == "http.disconnect":
                raise ClientGoneError()
            chunk = message.get("body", b"")
            if body.size + len(chunk) > policy.limit:
                raise too_large(policy.limit)
            if chunk:
                body.append(chunk)
            if not message.get("more_body", False):
                return body
    except BaseException:
        body.close()
        raise


def too_large(limit: int) -> PayloadTooLargeError:
    """413; the connection is closed after it, as the rest of the body is never read."""
    REFUSED.labels("body too large").inc()
    return PayloadTooLargeError(
        f"Request body over {limit} bytes", details={"limit": limit}, headers={"Connection": "close"}
    )
