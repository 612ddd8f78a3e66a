"""A real local webhook receiver for tests: records every request and answers from a per-path script.

Serve ``Receiver().app`` with ``serve_in_thread``; tell it how to answer a path (``script``: statuses, headers,
delays, then 200 for ever), and read back what it got (``received``, ``wait_for``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    """``time.time()`` when the request arrived."""
    status: int
    """What the receiver answered."""


class Receiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Reply]] = {}
        self._defaults: dict[str, Reply] = {}
        self.requests: list[Received] = []
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST", "GET", "PUT"])])

    def script(self, path: str, *replies: Reply | int, then: Reply | int | None = None) -> None:
        """Answer ``path`` with ``replies`` in order, then with ``then`` (default 200) for every later request."""
        with self._lock:
            self._scripts[path] = deque(r if isinstance(r, Reply) else Reply(r) for r in replies)
            if then is not None:
                self._defaults[path] = then if isinstance(then, Reply) else Reply(then)

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    async def wait_for(self, path: str, count: int, wait_seconds: float = 30) -> list[Received]:
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            got = self.received(path)
            if len(got) >= count:
                return got
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{path}: {len(self.received(path))} of {count} requests arrived")

    async def _handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        body = await request.body()
        arrived = time.time()
        with self._lock:
            queue = self._scripts.get(path)
            reply = queue.popleft() if queue else self._defaults.get(path, Reply())
            self.requests.append(Received(path, dict(request.headers), body, arrived, reply.status))
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return Response(reply.body, status_code=reply.status, headers=reply.headers)
