"""Deadlines of ``Render.wait`` and of an event stream, shared by the sync and async handles."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from renderiq._endpoints import Follow
from renderiq.errors import APIConnectionError, RateLimitError, RenderTimeoutError, ServerError, connection_error
from renderiq.models import RenderStatus
from renderiq.sse import SSEDecoder

STREAM_FAILURES = (APIConnectionError, ServerError, RateLimitError)
"""Errors of the event stream after which ``wait`` polls instead (a 4xx such as ``NOT_FOUND`` is raised)."""
MAX_READ_SECONDS = 60.0
"""Longest silence accepted on an event stream; the server sends a keep-alive comment every 15 s."""


class StreamWindow:
    """How long to follow an event stream: for ever (``timeout`` None) or until a deadline."""

    def __init__(self, timeout: float | None) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def read_timeout(self) -> float:
        if self.deadline is None:
            return MAX_READ_SECONDS
        return max(0.05, min(MAX_READ_SECONDS, self.deadline - time.monotonic()))

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


class StatusReader:
    """Reads a render's event stream line by line: its statuses, until the stream ends or the window closes."""

    def __init__(self, timeout: float | None) -> None:
        self.window = StreamWindow(timeout)
        self._decoder = SSEDecoder()

    def feed(self, line: str) -> RenderStatus | None:
        """The status an event carried, when ``line`` completed one."""
        event = self._decoder.feed(line)
        return RenderStatus.model_validate_json(event.data) if event is not None else None

    @property
    def done(self) -> bool:
        return self.window.expired()

    def failure(self, exc: httpx.TransportError) -> APIConnectionError | None:
        """The error to raise for a broken stream; None when it broke because the window closed (a read timeout)."""
        return None if self.window.expired() else connection_error(exc)


class WaitPlan:
    """One ``wait``: follow the stream (``follow="sse"``) while it works, else poll every ``poll_interval`` seconds."""

    def __init__(
        self,
        render_id: str,
        timeout: float,
        poll_interval: float,
        follow: Follow,
        on_status: Callable[[RenderStatus], object] | None = None,
    ) -> None:
        if follow not in ("sse", "poll"):
            raise ValueError(f"follow must be 'sse' or 'poll', not {follow!r}")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.render_id = render_id
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.streaming = follow == "sse"
        self.deadline = time.monotonic() + timeout
        self.last: RenderStatus | None = None
        self.on_status = on_status

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def finished(self, status: RenderStatus) -> bool:
        """Record ``status`` (and tell ``on_status``); True when it is final."""
        self.last = status
        if self.on_status is not None:
            self.on_status(status)
        return status.is_final

    def next_poll(self) -> float:
        """Seconds until the next poll; raises ``RenderTimeoutError`` once the deadline has passed."""
        remaining = self.remaining()
        if remaining <= 0:
            seen = f" (last status: {self.last.status})" if self.last else ""
            raise RenderTimeoutError(f"Render {self.render_id} not finished after {self.timeout:g}s{seen}", self.last)
        return min(self.poll_interval, remaining)
